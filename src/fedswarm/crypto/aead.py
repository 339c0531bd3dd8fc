"""Authenticated encryption with AES-256-GCM (NIST SP 800-38D, Dworkin, 2007).

:func:`aead_seal` draws a fresh random 96-bit nonce and returns ``nonce || ciphertext || tag``;
:func:`aead_open` checks the tag and raises :class:`~fedswarm.core.errors.VerificationError` on any
mismatch. The deterministic :func:`aes_gcm_encrypt` / :func:`aes_gcm_decrypt` take an explicit nonce and
exist for known-answer tests; a nonce must never repeat under one key.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedswarm.core.errors import ParameterError, VerificationError

__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_NONCE_BYTES",
    "AEAD_OVERHEAD",
    "aead_open",
    "aead_seal",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
]

AEAD_KEY_BYTES = 32
AEAD_NONCE_BYTES = 12
_TAG_BYTES = 16
AEAD_OVERHEAD = AEAD_NONCE_BYTES + _TAG_BYTES


def _cipher(key: bytes) -> AESGCM:
    if len(key) != AEAD_KEY_BYTES:
        raise ParameterError(f"aead key: expected {AEAD_KEY_BYTES} bytes (AES-256), got {len(key)}")
    return AESGCM(bytes(key))


def aes_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, *, associated_data: bytes) -> bytes:
    """Encrypt with AES-256-GCM under an explicit 12-byte nonce; returns ``ciphertext || tag``."""
    if len(nonce) != AEAD_NONCE_BYTES:
        raise ParameterError(f"aead nonce: expected {AEAD_NONCE_BYTES} bytes, got {len(nonce)}")
    return _cipher(key).encrypt(bytes(nonce), bytes(plaintext), bytes(associated_data))


def aes_gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, *, associated_data: bytes) -> bytes:
    """Decrypt ``ciphertext || tag``; raises :class:`VerificationError` if the tag does not verify."""
    if len(nonce) != AEAD_NONCE_BYTES:
        raise ParameterError(f"aead nonce: expected {AEAD_NONCE_BYTES} bytes, got {len(nonce)}")
    try:
        return _cipher(key).decrypt(bytes(nonce), bytes(ciphertext), bytes(associated_data))
    except InvalidTag as exc:
        raise VerificationError("aead: authentication tag does not verify (wrong key, data or context)") from exc


def aead_seal(key: bytes, plaintext: bytes, *, associated_data: bytes) -> bytes:
    """Encrypt under a fresh random nonce and return ``nonce || ciphertext || tag``.

    Parameters
    ----------
    key
        32-byte AES-256 key.
    plaintext
        Bytes to protect.
    associated_data
        Bytes that are authenticated but not encrypted (sender, recipient, session ...).

    Returns
    -------
    bytes
        ``len(plaintext) + AEAD_OVERHEAD`` bytes.
    """
    nonce = os.urandom(AEAD_NONCE_BYTES)
    return nonce + aes_gcm_encrypt(key, nonce, plaintext, associated_data=associated_data)


def aead_open(key: bytes, sealed: bytes, *, associated_data: bytes) -> bytes:
    """Inverse of :func:`aead_seal`; raises :class:`VerificationError` on any tampering."""
    if len(sealed) < AEAD_OVERHEAD:
        raise VerificationError(f"aead: sealed message of {len(sealed)} bytes is shorter than nonce and tag")
    sealed = bytes(sealed)
    return aes_gcm_decrypt(key, sealed[:AEAD_NONCE_BYTES], sealed[AEAD_NONCE_BYTES:], associated_data=associated_data)

"""Key derivation: HKDF with SHA-256 (RFC 5869, Krawczyk and Eronen, 2010).

Raw Diffie-Hellman outputs are never used as keys directly; they go through :func:`hkdf_sha256` with an
``info`` string that names the purpose (and the session), so one agreement yields independent keys for
independent uses.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedswarm.core.errors import ParameterError

__all__ = ["hkdf_sha256"]

_MAX_LENGTH = 255 * 32


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """Derive ``length`` bytes from input keying material with HKDF-SHA256 (RFC 5869).

    Parameters
    ----------
    ikm
        Input keying material, for example an X25519 shared secret.
    info
        Context and purpose label; different labels give independent outputs.
    length
        Output length in bytes, 1 to 8160.
    salt
        Optional salt; ``None`` means a string of zeros of the hash length (RFC 5869, section 2.2).

    Returns
    -------
    bytes
        The output keying material.
    """
    if not 1 <= length <= _MAX_LENGTH:
        raise ParameterError(f"hkdf_sha256 length: {length} is outside 1..{_MAX_LENGTH}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(bytes(ikm))

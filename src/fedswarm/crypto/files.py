"""Key material on disk: atomic writes with safe permissions, reads that name the file.

Private keys are written with mode ``0600`` through a temporary file in the same directory that is
flushed, ``fsync``-ed and renamed over the target (``os.replace``), and the directory itself is then
``fsync``-ed, so a crash leaves either the old file or the new one, never a truncated key. Reading
classifies what went wrong (missing, empty, truncated, not PEM, wrong password, ...) in a
:class:`KeyMaterialError` whose message names the file, so an operator can fix the right thing.

The PEM framing checks here (RFC 7468) are textual; :func:`parse_private_key` and
:func:`private_key_pem` handle PKCS #8 private keys, optionally encrypted with a password, for both
:mod:`fedswarm.crypto.signing` (Ed25519) and :mod:`fedswarm.crypto.pki` (ECDSA P-256).

Secrets that are not PEM keys (a CKKS secret context, a join key) are protected with the same password
by :func:`write_secret`: the file is ``SEALED_MAGIC``, one byte each of ``log2 N``, ``r`` and ``p``, a
16-byte salt, then the AES-256-GCM output ``nonce || ciphertext || tag`` (:func:`fedswarm.crypto.aead.aead_seal`)
under the key ``scrypt(password, salt, N, r, p)`` (RFC 7914, Percival and Josefsson, 2016); the header
and a label naming the file's purpose are the associated data, so a file cannot be swapped for another
kind of secret sealed with the same password. Without a password the secret is written as is (mode
``0600``). :func:`read_password_file` reads a password kept in a file (one trailing newline removed).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fedswarm.core.errors import ConfigurationError, FedswarmError, VerificationError
from fedswarm.crypto.aead import AEAD_KEY_BYTES, AEAD_OVERHEAD, aead_open, aead_seal

__all__ = [
    "SEALED_MAGIC",
    "KeyMaterialError",
    "MaterialProblem",
    "check_pem",
    "is_password_sealed",
    "open_with_password",
    "parse_private_key",
    "private_key_pem",
    "read_material",
    "read_password_file",
    "read_secret",
    "seal_with_password",
    "write_atomic",
    "write_private",
    "write_public",
    "write_secret",
]

MaterialProblem = Literal[
    "missing",
    "unreadable",
    "empty",
    "truncated",
    "wrong format",
    "wrong type",
    "wrong password",
    "password required",
    "not encrypted",
]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")

SEALED_MAGIC = b"fedswarm-sealed/1\n"
"""First bytes of a password-sealed secret (:func:`seal_with_password`)."""
_SALT_BYTES = 16
_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P = 15, 8, 1  # 32 MiB, about 0.1 s: the cost of an interactive login
_MAX_LOG2_N = 20  # refuse headers asking for more than 128 MiB of scrypt memory
_HEADER_BYTES = len(SEALED_MAGIC) + 3 + _SALT_BYTES


class KeyMaterialError(FedswarmError):
    """A key, certificate, CSR or CRL cannot be read or parsed.

    Parameters
    ----------
    source
        The file (or a description of the bytes) that holds the material.
    problem
        What is wrong, one of :data:`MaterialProblem`.
    detail
        A human explanation appended to the message.
    """

    def __init__(self, source: str, problem: MaterialProblem, detail: str = "") -> None:
        message = f"{source}: {problem}" + (f" ({detail})" if detail else "")
        super().__init__(message)
        self.source = source
        self.problem: MaterialProblem = problem
        self.detail = detail


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically, with permission bits ``mode``.

    The bytes go to a temporary file in the same directory (created ``0600``), are flushed and
    ``fsync``-ed, the mode is set, and the file is renamed over ``path``; the directory is ``fsync``-ed
    afterwards so the rename survives a crash. No reader ever sees a partial file.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)


def write_private(path: Path, data: bytes) -> None:
    """Write secret material (a private key) atomically with mode ``0600``."""
    write_atomic(path, data, mode=PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Write public material (a certificate, CRL, manifest) atomically with mode ``0644``."""
    write_atomic(path, data, mode=PUBLIC_MODE)


def read_material(path: Path) -> bytes:
    """Return the bytes of ``path``, raising :class:`KeyMaterialError` naming it when it cannot be read.

    Raises
    ------
    KeyMaterialError
        ``missing`` (no such file), ``unreadable`` (a directory, no permission) or ``empty``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(str(path), "missing", "no such file") from None
    except OSError as exc:
        raise KeyMaterialError(str(path), "unreadable", exc.strerror or type(exc).__name__) from None
    if not data.strip():
        raise KeyMaterialError(str(path), "empty", "the file has no content")
    return data


def check_pem(data: bytes, *, labels: tuple[str, ...], source: str) -> str:
    """Check the RFC 7468 framing of a single PEM block and return its label.

    Parameters
    ----------
    data
        The PEM text.
    labels
        Accepted labels (``"CERTIFICATE"``, ``"PRIVATE KEY"``, ...).
    source
        Names the file in error messages.

    Raises
    ------
    KeyMaterialError
        ``empty``, ``wrong format`` (no PEM block at all), ``truncated`` (a BEGIN line without its
        END line) or ``wrong type`` (a PEM block with another label).
    """
    if not data.strip():
        raise KeyMaterialError(source, "empty", "no content")
    match = _BEGIN.search(data)
    if match is None:
        raise KeyMaterialError(source, "wrong format", "no '-----BEGIN ...-----' line: not a PEM file")
    label = match.group(1).decode("ascii")
    if f"-----END {label}-----".encode("ascii") not in data[match.end() :]:
        raise KeyMaterialError(source, "truncated", f"'BEGIN {label}' has no matching END line")
    if label not in labels:
        wanted = " or ".join(repr(x) for x in labels)
        raise KeyMaterialError(source, "wrong type", f"found a PEM {label!r} block, expected {wanted}")
    return label


def parse_private_key(data: bytes, *, password: bytes | None, source: str) -> PrivateKeyTypes:
    """Parse a PKCS #8 PEM private key, encrypted when ``password`` is given.

    Raises
    ------
    KeyMaterialError
        Framing problems (see :func:`check_pem`), ``wrong password``, ``password required`` (the key
        is encrypted and no password was given), ``not encrypted`` (a password was given for a plain
        key: refused rather than ignored), or ``wrong format`` (the block does not decode).
    """
    label = check_pem(data, labels=("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), source=source)
    encrypted = label == "ENCRYPTED PRIVATE KEY"
    if encrypted and password is None:
        raise KeyMaterialError(source, "password required", "the key is encrypted")
    if not encrypted and password is not None:
        raise KeyMaterialError(source, "not encrypted", "a password was given for an unencrypted key")
    try:
        return serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        if encrypted and "password" in str(exc).lower():
            raise KeyMaterialError(source, "wrong password", "could not decrypt the key") from None
        raise KeyMaterialError(source, "wrong format", "the PEM block does not decode to a key") from None
    except Exception as exc:  # the Rust backend raises its own types for some malformed DER
        raise KeyMaterialError(source, "wrong format", type(exc).__name__) from None


def private_key_pem(key: PrivateKeyTypes, *, password: bytes | None) -> bytes:
    """Serialize ``key`` as PKCS #8 PEM, encrypted with the best available scheme when ``password`` is set.

    Raises
    ------
    ConfigurationError
        An empty password (it would look protected and not be).
    """
    encryption: serialization.KeySerializationEncryption
    if password is None:
        encryption = serialization.NoEncryption()
    elif not password:
        raise ConfigurationError("password: an empty password is not allowed; pass None for no encryption")
    else:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def read_password_file(path: Path) -> bytes:
    """The password kept in ``path``: its bytes without one trailing newline (``\\n`` or ``\\r\\n``).

    Raises
    ------
    KeyMaterialError
        ``missing``, ``unreadable`` or ``empty`` (a file holding only a newline is empty too).
    """
    data = read_material(path)
    for ending in (b"\r\n", b"\n"):
        if data.endswith(ending):
            data = data[: -len(ending)]
            break
    if not data:  # pragma: no cover - read_material refuses whitespace-only files already
        raise KeyMaterialError(str(path), "empty", "the password file holds no password")
    return data


def is_password_sealed(data: bytes) -> bool:
    """Whether ``data`` starts like the output of :func:`seal_with_password`."""
    return bytes(data[: len(SEALED_MAGIC)]) == SEALED_MAGIC


def _scrypt_key(password: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=AEAD_KEY_BYTES, n=1 << log2_n, r=r, p=p).derive(password)


def _check_password(password: bytes) -> None:
    if not password:
        raise ConfigurationError("password: an empty password is not allowed; pass None for no encryption")


def seal_with_password(data: bytes, password: bytes, *, label: str) -> bytes:
    """Encrypt ``data`` under a key derived from ``password`` with scrypt (format in the module docstring).

    Parameters
    ----------
    data
        The secret.
    password
        A non-empty password.
    label
        What the secret is (``"fedswarm.ckks-secret-context"``); :func:`open_with_password` needs the same.

    Raises
    ------
    ConfigurationError
        An empty password.
    """
    _check_password(password)
    salt = os.urandom(_SALT_BYTES)
    header = SEALED_MAGIC + bytes((_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P)) + salt
    key = _scrypt_key(password, salt, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P)
    return header + aead_seal(key, data, associated_data=header + label.encode("utf-8"))


def open_with_password(data: bytes, password: bytes | None, *, label: str, source: str) -> bytes:
    """Decrypt the output of :func:`seal_with_password`.

    Raises
    ------
    KeyMaterialError
        Naming ``source``: ``not encrypted`` (no sealed header), ``password required`` (``password`` is
        ``None``), ``truncated``, ``wrong format`` (unsupported parameters) or ``wrong password`` (the key
        does not open it: a wrong password, another label, or altered bytes).
    """
    data = bytes(data)
    if not is_password_sealed(data):
        raise KeyMaterialError(source, "not encrypted", "no fedswarm-sealed header")
    if password is None:
        raise KeyMaterialError(source, "password required", "the secret is encrypted")
    _check_password(password)
    if len(data) < _HEADER_BYTES + AEAD_OVERHEAD:
        raise KeyMaterialError(source, "truncated", f"{len(data)} bytes is shorter than the sealed header")
    log2_n, r, p = data[len(SEALED_MAGIC) : len(SEALED_MAGIC) + 3]
    if not (10 <= log2_n <= _MAX_LOG2_N and r == _SCRYPT_R and 1 <= p <= 4):
        raise KeyMaterialError(source, "wrong format", f"unsupported scrypt parameters N=2^{log2_n}, r={r}, p={p}")
    header = data[:_HEADER_BYTES]
    key = _scrypt_key(password, header[-_SALT_BYTES:], log2_n, r, p)
    try:
        return aead_open(key, data[_HEADER_BYTES:], associated_data=header + label.encode("utf-8"))
    except VerificationError:
        raise KeyMaterialError(source, "wrong password", "could not decrypt it (or the file was altered)") from None


def write_secret(path: Path, data: bytes, *, password: bytes | None, label: str) -> None:
    """Write a secret atomically with mode ``0600``, sealed with ``password`` when one is given."""
    write_private(path, data if password is None else seal_with_password(data, password, label=label))


def read_secret(path: Path, *, password: bytes | None, label: str) -> bytes:
    """Read a secret written by :func:`write_secret`.

    Raises
    ------
    KeyMaterialError
        Naming ``path``: as :func:`read_material`, ``not encrypted`` when a password is given for a plain
        secret (refused rather than ignored), ``password required`` when the secret is sealed and no
        password is given, and the errors of :func:`open_with_password`.
    """
    data = read_material(path)
    if password is None and not is_password_sealed(data):
        return data
    return open_with_password(data, password, label=label, source=str(path))


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse directory fsync
        pass
    finally:
        os.close(fd)

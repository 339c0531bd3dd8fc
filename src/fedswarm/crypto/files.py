"""Key material on disk: atomic writes with safe permissions, reads that name the file.

Private keys are written with mode ``0600`` through a temporary file in the same directory that is
flushed, ``fsync``-ed and renamed over the target (``os.replace``), and the directory itself is then
``fsync``-ed, so a crash leaves either the old file or the new one, never a truncated key. Reading
classifies what went wrong (missing, empty, truncated, not PEM, wrong password, ...) in a
:class:`KeyMaterialError` whose message names the file, so an operator can fix the right thing.

The PEM framing checks here (RFC 7468) are textual; :func:`parse_private_key` and
:func:`private_key_pem` handle PKCS #8 private keys, optionally encrypted with a password, for both
:mod:`fedswarm.crypto.signing` (Ed25519) and :mod:`fedswarm.crypto.pki` (ECDSA P-256).
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

from fedswarm.core.errors import ConfigurationError, FedswarmError

__all__ = [
    "KeyMaterialError",
    "MaterialProblem",
    "check_pem",
    "parse_private_key",
    "private_key_pem",
    "read_material",
    "write_atomic",
    "write_private",
    "write_public",
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

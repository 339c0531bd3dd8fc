"""Passwords for kits and the CA, never on the command line in clear.

A password comes, in this order, from a file named by an option (``--password-file``), from an
environment variable (``FEDSWARM_KIT_PASSWORD``, ``FEDSWARM_CA_PASSWORD``), or from an interactive
prompt when standard input is a terminal. A process listing shows only the file's name.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Literal

from fedswarm.core.errors import ConfigurationError

__all__ = ["CA_PASSWORD_ENV", "KIT_PASSWORD_ENV", "ca_password", "kit_password", "new_password"]

KIT_PASSWORD_ENV = "FEDSWARM_KIT_PASSWORD"
CA_PASSWORD_ENV = "FEDSWARM_CA_PASSWORD"

Source = Literal["file", "env"]


def _given(file: Path | None, env: str) -> tuple[bytes, Source] | None:
    from fedswarm.crypto.files import read_password_file

    if file is not None:
        return read_password_file(file), "file"
    value = os.environ.get(env)
    if value:
        return value.encode("utf-8"), "env"
    return None


def _prompt(question: str) -> bytes | None:
    if not sys.stdin.isatty():
        return None
    answer = getpass.getpass(question)
    if not answer:
        raise ConfigurationError("password: nothing was entered")
    return answer.encode("utf-8")


def kit_password(kit: Path, file: Path | None) -> bytes | None:
    """The password that opens ``kit``, or ``None`` for a kit whose keys are not encrypted.

    An encrypted kit takes the password from ``file``, else ``FEDSWARM_KIT_PASSWORD``, else a prompt on a
    terminal. For a kit that is not encrypted, ``file`` is refused (when loading the kit: the error names
    the key file) while the environment variable is ignored, so a shell that exports it can still run
    ``fedswarm up`` with its unencrypted kits.

    Raises
    ------
    ConfigurationError
        The kit is encrypted and no password was given (no file, no variable, no terminal).
    KeyMaterialError
        The password file cannot be read, or the kit's key file is unreadable.
    """
    from fedswarm.node.kit import TLS_KEY_FILE, kit_is_encrypted

    given = _given(file, KIT_PASSWORD_ENV)
    if not kit_is_encrypted(kit):
        return given[0] if given is not None and given[1] == "file" else None
    if given is not None:
        return given[0]
    typed = _prompt(f"password of kit {kit}: ")
    if typed is None:
        raise ConfigurationError(
            f"{kit / TLS_KEY_FILE}: the kit's keys are encrypted; pass --password-file PATH or set "
            f"{KIT_PASSWORD_ENV} (or run on a terminal to be asked)"
        )
    return typed


def new_password(file: Path | None, *, env: str) -> bytes | None:
    """The password to encrypt new keys with: from ``file``, else the variable ``env``, else none (no prompt)."""
    given = _given(file, env)
    return None if given is None else given[0]


def ca_password(ca_key: Path, file: Path | None) -> bytes | None:
    """The password of the CA key ``ca_key`` (from ``file``, ``FEDSWARM_CA_PASSWORD`` or a prompt), or ``None``.

    Raises
    ------
    ConfigurationError
        The CA key is encrypted and no password was given.
    """
    from fedswarm.crypto.files import check_pem, read_material

    given = _given(file, CA_PASSWORD_ENV)
    label = check_pem(read_material(ca_key), labels=("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), source=str(ca_key))
    if label != "ENCRYPTED PRIVATE KEY":
        return given[0] if given is not None and given[1] == "file" else None
    if given is not None:
        return given[0]
    typed = _prompt(f"password of the CA key {ca_key}: ")
    if typed is None:
        raise ConfigurationError(
            f"{ca_key}: the CA key is encrypted; pass --ca-password-file PATH or set {CA_PASSWORD_ENV}"
        )
    return typed

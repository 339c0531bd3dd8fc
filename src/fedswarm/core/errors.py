"""The exception hierarchy.

Every error a user can trigger derives from :class:`FedswarmError` and carries a message that names
the offending field, file, member or tensor. The CLI turns these into a one-line message and a
non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DataError",
    "FedswarmError",
    "ParameterError",
    "RoundAborted",
    "SpecError",
    "TaskError",
    "UpdateRejected",
    "VerificationError",
]


class FedswarmError(Exception):
    """Base class of every error fedswarm raises on purpose."""

    exit_code: int = 1


class SpecError(FedswarmError):
    """A federation spec is malformed or refers to something that does not exist.

    ``path`` is the dotted key path inside the spec (``"strategy.name"``), or the file.
    """

    exit_code = 2

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class ConfigurationError(FedswarmError):
    """A combination of settings that is individually valid but unsafe or unsupported together."""

    exit_code = 2


class DataError(FedswarmError):
    """Local data cannot be loaded or partitioned (missing label column, empty member, ...)."""


class TaskError(FedswarmError):
    """A user task broke its contract (wrong return type, wrong names or shapes, ...)."""


class ParameterError(FedswarmError):
    """Parameters do not match the expected names, shapes or dtypes."""


class UpdateRejected(FedswarmError):
    """A member's update was refused (non-finite values, wrong shape, failed check)."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(f"update from {member} rejected: {reason}")
        self.member = member
        self.reason = reason


class RoundAborted(FedswarmError):
    """A round could not complete (for example fewer than ``min_members`` replied)."""


class VerificationError(FedswarmError):
    """A signature, proof, digest or certificate did not verify. Always raised, never returned."""

    exit_code = 3

"""What every ledger entry type is built from: the error, the field checks, the body base class.

The checks take a value and the path of its field (``"members[2].key"``), return the value in the form an
entry holds (a tuple for a list, bytes for a ``{"$b": hex}`` key, a float for a number) and raise
:class:`EntryError` naming that path. :class:`BodyBase` is the base of the body dataclasses of
:mod:`fedswarm.ledger.member_bodies` and :mod:`fedswarm.ledger.round_bodies`; :class:`FastPickle` pickles
them, and the :class:`~fedswarm.ledger.entries.Entry` envelope around them, compactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from fedswarm.crypto.signing import PUBLIC_KEY_SIZE

if TYPE_CHECKING:
    from fedswarm.ledger.entries import Body

__all__ = [
    "BodyBase",
    "EntryError",
    "EntryKind",
    "FastPickle",
    "as_digest",
    "as_digests",
    "as_int",
    "as_key",
    "as_list",
    "as_literal",
    "as_metrics",
    "as_name",
    "as_names",
    "as_object",
    "as_real",
    "as_reasons",
    "as_text",
    "check_keys",
    "field_error",
]

EntryKind: TypeAlias = Literal[
    "federation_created",
    "member_admitted",
    "member_removed",
    "round_opened",
    "update_submitted",
    "aggregate_committed",
    "evaluation_reported",
    "privacy_spent",
    "anomaly_flagged",
]

_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


class EntryError(ValueError):
    """Bytes or values that do not form a valid entry; the message names the field."""


# --------------------------------------------------------------------------------------------------
# field checks: each returns the JSON-ready form when encoding and checks the type when decoding
# --------------------------------------------------------------------------------------------------


def field_error(path: str, message: str) -> EntryError:
    """The error for field ``path``."""
    return EntryError(f"{path}: {message}")


def as_text(value: Any, path: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise field_error(path, f"expected a string, got {type(value).__name__}")
    return value


def as_name(value: Any, path: str) -> str:
    """A printable name of 1 to 256 characters."""
    text = as_text(value, path)
    if not text or len(text) > 256 or not text.isprintable():
        raise field_error(path, f"{text[:40]!r} is not a printable name of 1 to 256 characters")
    return text


def as_int(value: Any, path: str, *, minimum: int = 0) -> int:
    """An int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(path, f"expected an int, got {type(value).__name__}")
    if value < minimum:
        raise field_error(path, f"{value} is below {minimum}")
    return int(value)


def as_real(value: Any, path: str) -> float:
    """Accept any real number when building an entry (numpy scalars included), refuse non-finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise field_error(path, f"expected a number, got {type(value).__name__}") from None
    if not math.isfinite(number):
        raise field_error(path, f"{number!r} is not finite")
    return number + 0.0


def as_digest(value: Any, path: str) -> str:
    """A SHA-256 digest: 64 lowercase hex digits."""
    text = as_text(value, path)
    if not _DIGEST.match(text):
        raise field_error(path, f"{text[:80]!r} is not 64 lowercase hex digits")
    return text


def as_key(value: Any, path: str) -> bytes:
    """An Ed25519 public key: bytes, or ``{"$b": lowercase hex}`` as decoded JSON holds it."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, dict) and len(value) == 1 and isinstance(value.get("$b"), str):
        text = value["$b"]
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise field_error(path, "bytes are not hex") from None
        if data.hex() != text:
            raise field_error(path, "bytes are not lowercase hex")
    else:
        raise field_error(path, f"expected bytes, got {type(value).__name__}")
    if len(data) != PUBLIC_KEY_SIZE:
        raise field_error(path, f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(data)}")
    return data


def as_literal(value: Any, path: str, allowed: tuple[str, ...]) -> str:
    """One of the strings ``allowed``."""
    text = as_text(value, path)
    if text not in allowed:
        raise field_error(path, f"{text!r} is not one of {list(allowed)}")
    return text


def as_list(value: Any, path: str) -> Sequence[Any]:
    """A sequence that is not a string or bytes."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise field_error(path, f"expected a list, got {type(value).__name__}")
    return value


def as_names(value: Any, path: str) -> tuple[str, ...]:
    """A list of names (:func:`as_name`)."""
    return tuple(as_name(item, f"{path}[{i}]") for i, item in enumerate(as_list(value, path)))


def as_digests(value: Any, path: str) -> tuple[str, ...]:
    """A list of digests (:func:`as_digest`)."""
    return tuple(as_digest(item, f"{path}[{i}]") for i, item in enumerate(as_list(value, path)))


def as_object(value: Any, path: str) -> Mapping[str, Any]:
    """A mapping with string keys, none of them ``"$b"`` (reserved for bytes)."""
    if not isinstance(value, Mapping):
        raise field_error(path, f"expected an object, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise field_error(path, f"object key {key!r} is not a string")
    if "$b" in value:
        raise field_error(path, "the key '$b' is reserved for bytes")
    return value


def as_metrics(value: Any, path: str) -> dict[str, float | None]:
    """Metrics when building an entry: numbers, non-finite ones and ``None`` become ``None``."""
    out: dict[str, float | None] = {}
    for key, number in as_object(value, path).items():
        if number is None:
            out[key] = None
            continue
        try:
            as_float = float(number)
        except (TypeError, ValueError):
            raise field_error(f"{path}.{key}", f"expected a number, got {type(number).__name__}") from None
        out[key] = as_float + 0.0 if math.isfinite(as_float) else None
    return dict(sorted(out.items()))


def as_reasons(value: Any, path: str) -> dict[str, str]:
    """A mapping of member names to reasons (strings)."""
    return {as_name(k, path): as_text(v, f"{path}.{k}") for k, v in as_object(value, path).items()}


def check_keys(data: Mapping[str, Any], path: str, expected: frozenset[str]) -> None:
    """Raise :class:`EntryError` naming the keys of ``data`` missing from, or not in, ``expected``."""
    keys = set(data)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        raise field_error(path, "; ".join(parts))


# --------------------------------------------------------------------------------------------------
# the base of entry dataclasses
# --------------------------------------------------------------------------------------------------


def _rebuild(cls: type[Any], values: tuple[Any, ...]) -> Any:
    """Unpickle without re-validating: the pickling side built (and so validated) the object."""
    obj = object.__new__(cls)
    for name, value in zip(cls.__match_args__, values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


class FastPickle:
    """Pickle frozen dataclasses as ``(class, field values)``: about ten times faster than the default."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), tuple(getattr(self, name) for name in self.__match_args__))  # type: ignore[attr-defined]


class BodyBase(FastPickle):
    """Shared behaviour of entry bodies: strict parsing and fast pickling (each body class writes its own
    ``to_json``, the JSON-ready form with bytes as ``{"$b": hex}``)."""

    __slots__ = ()
    kind: ClassVar[EntryKind]
    _keys: ClassVar[frozenset[str]]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Body:
        """Build the body from decoded JSON, refusing missing, extra or mistyped fields.

        The constructor checks the values; whatever it converts (an int where a float belongs, say) makes
        the re-encoded bytes differ, which :meth:`~fedswarm.ledger.entries.Entry.decode` refuses.
        """
        check_keys(data, "body", cls._keys)
        return cls(**data)  # type: ignore[return-value]

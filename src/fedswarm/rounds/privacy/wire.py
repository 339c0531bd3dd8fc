"""Byte encoding of the payloads of privacy exchanges, so that any transport can ship them opaquely.

Every request and reply of the ``privacy.*``, ``secagg.*`` and ``ckks.*`` exchange kinds is a frozen
dataclass deriving from :class:`WireMessage`, whose fields are ``bytes``, ``int``, ``float``, ``str``,
``bool``, numpy arrays, tuples of these, or nested :class:`WireMessage` s. :meth:`WireMessage.to_wire`
returns the canonical encoding (:mod:`fedswarm.codec.canonical`) of::

    {"kind": <class name>, "v": 1, "fields": {<name>: <value>, ...}}

with arrays as ``{"dtype": "<f8", "shape": [...], "data": <bytes, little-endian, C order>}`` and tuples as
lists. :meth:`WireMessage.from_wire` checks the kind, the version, the field names and every value's type
against the class's annotations, and raises :class:`~fedswarm.core.errors.VerificationError` on anything
else, so a malformed or mislabelled payload never reaches a protocol state machine.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import numpy.typing as npt

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError

__all__ = ["WIRE_VERSION", "WireMessage", "decode_one_of", "expect"]

WIRE_VERSION = 1
_DTYPES = frozenset({"<f8", "<f4", "<u8", "<i8", "|u1", "|b1"})


def _array_to_canonical(a: npt.NDArray[Any], where: str) -> dict[str, Any]:
    arr = np.ascontiguousarray(a)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.str not in _DTYPES:
        raise TypeError(f"{where}: dtype {arr.dtype} cannot travel (allowed: {sorted(_DTYPES)})")
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def _array_from_canonical(value: Any, where: str) -> npt.NDArray[Any]:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise VerificationError(f"{where}: expected an array object with dtype, shape and data")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if dtype not in _DTYPES or not isinstance(data, bytes):
        raise VerificationError(f"{where}: unsupported array dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise VerificationError(f"{where}: malformed array shape {shape!r}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * np.dtype(dtype).itemsize != len(data):
        raise VerificationError(f"{where}: {len(data)} data bytes do not match shape {shape} of {dtype}")
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, WireMessage):
        return value._fields_to_canonical(where)
    if isinstance(value, np.ndarray):
        return _array_to_canonical(value, where)
    if isinstance(value, tuple):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bool | int | float | str | bytes):
        return value
    raise TypeError(f"{where}: {type(value).__name__} cannot travel in a wire message")


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bytes:
        if not isinstance(value, bytes):
            raise VerificationError(f"{where}: expected bytes")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise VerificationError(f"{where}: expected a boolean")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VerificationError(f"{where}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VerificationError(f"{where}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise VerificationError(f"{where}: expected a string")
        return value
    if origin is np.ndarray:
        return _array_from_canonical(value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise VerificationError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise VerificationError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{where}: union fields are not supported in wire messages")
    if isinstance(hint, type) and issubclass(hint, WireMessage):
        return hint._from_canonical(value, where)
    raise TypeError(f"{where}: field type {hint!r} is not supported in wire messages")


@dataclasses.dataclass(frozen=True)
class WireMessage:
    """Base of every privacy exchange payload; see the module docstring for the encoding."""

    _hints_cache: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        hints = WireMessage._hints_cache.get(cls)
        if hints is None:
            resolved = typing.get_type_hints(cls)
            hints = {f.name: resolved[f.name] for f in dataclasses.fields(cls)}
            WireMessage._hints_cache[cls] = hints
        return hints

    def _fields_to_canonical(self, where: str) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "v": WIRE_VERSION,
            "fields": {name: _encode(getattr(self, name), f"{where}.{name}") for name in self._hints()},
        }

    @classmethod
    def _from_canonical(cls, value: Any, where: str) -> Self:
        if not isinstance(value, dict) or set(value) != {"kind", "v", "fields"}:
            raise VerificationError(f"{where}: not a wire message")
        if value["kind"] != cls.__name__:
            raise VerificationError(f"{where}: expected a {cls.__name__}, got {value['kind']!r}")
        if value["v"] != WIRE_VERSION:
            raise VerificationError(f"{where}: unsupported wire version {value['v']!r}")
        fields = value["fields"]
        hints = cls._hints()
        if not isinstance(fields, dict) or set(fields) != set(hints):
            got = sorted(fields) if isinstance(fields, dict) else fields
            raise VerificationError(f"{where}: fields {got} do not match {sorted(hints)}")
        return cls(**{name: _decode(hint, fields[name], f"{where}.{name}") for name, hint in hints.items()})

    def to_wire(self) -> bytes:
        """The canonical bytes of this message."""
        return canonical.encode(self._fields_to_canonical(type(self).__name__))

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Parse and type-check bytes produced by :meth:`to_wire`.

        Raises
        ------
        VerificationError
            The bytes are not canonical, not this kind of message, or a field has the wrong type.
        """
        try:
            value = canonical.decode(bytes(data))
        except ValueError as exc:
            raise VerificationError(f"{cls.__name__}: {exc}") from None
        return cls._from_canonical(value, cls.__name__)


W = TypeVar("W", bound=WireMessage)


def decode_one_of(data: bytes | bytearray, allowed: Sequence[type[WireMessage]], *, where: str) -> WireMessage:
    """Parse bytes produced by :meth:`WireMessage.to_wire` of one of the ``allowed`` classes, chosen by the
    kind name the bytes carry (a strict registry: any other kind is refused, nothing else is instantiated).

    Raises
    ------
    VerificationError
        Not canonical, a kind that is not allowed, or a field of the wrong type (the message names ``where``).
    """
    try:
        value = canonical.decode(bytes(data))
    except ValueError as exc:
        raise VerificationError(f"{where}: {exc}") from None
    kind = value.get("kind") if isinstance(value, dict) else None
    by_name = {cls.__name__: cls for cls in allowed}
    cls = by_name.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise VerificationError(f"{where}: a {kind!r} message is not expected here (expected {sorted(by_name)})")
    return cls._from_canonical(value, f"{where} ({kind})")


def expect(request: object, cls: type[W], *, kind: str) -> W:
    """``request`` as a ``cls``: the object itself, or parsed from its wire bytes.

    Raises
    ------
    VerificationError
        Anything else (the member handler then answers with a Dropout naming the kind).
    """
    if isinstance(request, cls):
        return request
    if isinstance(request, bytes | bytearray | memoryview):
        return cls.from_wire(bytes(request))
    raise VerificationError(f"{kind}: expected a {cls.__name__}, got {type(request).__name__}")

"""Canonical encoding of structured values that are hashed or signed.

The bytes that are hashed and signed must be exactly reproducible by anyone, on any machine, from the
same value. This module defines one canonical form, a strict subset of JSON (close to RFC 8785, JCS):

* objects have string keys, emitted sorted by their UTF-8 bytes, with no whitespace anywhere;
* integers are emitted in decimal; floats with Python's shortest round-trip ``repr`` (IEEE 754 doubles,
  identical on every platform); NaN and infinities are refused; ``-0.0`` is emitted as ``0.0``;
* ``bytes`` are emitted as ``{"$b": "<lowercase hex>"}`` so that they stay distinguishable from text;
* strings are emitted with JSON escapes for control characters only, as UTF-8.

:func:`decode` inverts :func:`encode`, and :func:`encode` of the decoded value returns the same bytes, so a
stored encoding can be checked by re-encoding it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

__all__ = ["CanonicalValue", "decode", "digest", "encode"]

CanonicalValue: TypeAlias = (
    None | bool | int | float | str | bytes | Sequence["CanonicalValue"] | Mapping[str, "CanonicalValue"]
)

_BYTES_KEY = "$b"


def _encode_into(value: Any, out: list[str], path: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or '<root>'}: non-finite float {value!r} cannot be encoded canonically")
        out.append(repr(value + 0.0))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, bytes | bytearray | memoryview):
        out.append('{"' + _BYTES_KEY + '":"' + bytes(value).hex() + '"}')
    elif isinstance(value, Mapping):
        keys = list(value.keys())
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"{path or '<root>'}: object key {key!r} is not a string")
        if _BYTES_KEY in keys:
            raise ValueError(f"{path or '<root>'}: the key {_BYTES_KEY!r} is reserved for bytes")
        keys.sort(key=lambda k: k.encode("utf-8"))
        out.append("{")
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode_into(value[key], out, f"{path}.{key}" if path else key)
        out.append("}")
    elif isinstance(value, Sequence):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode_into(item, out, f"{path}[{i}]")
        out.append("]")
    else:
        # numpy scalars and similar: accept exact ints and floats, refuse anything else.
        if hasattr(value, "item"):
            _encode_into(value.item(), out, path)
            return
        raise TypeError(f"{path or '<root>'}: {type(value).__name__} cannot be encoded canonically")


def encode(value: CanonicalValue) -> bytes:
    """Return the canonical bytes of ``value``.

    Raises
    ------
    TypeError
        A value of an unsupported type (the message names its path).
    ValueError
        A non-finite float or a reserved key.
    """
    out: list[str] = []
    _encode_into(value, out, "")
    return "".join(out).encode("utf-8")


def _revive(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and _BYTES_KEY in obj and isinstance(obj[_BYTES_KEY], str):
            return bytes.fromhex(obj[_BYTES_KEY])
        return {k: _revive(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_revive(v) for v in obj]
    return obj


def decode(data: bytes) -> Any:
    """Parse canonical bytes, refusing input that is not in canonical form.

    Raises
    ------
    ValueError
        The bytes are not valid JSON, or re-encoding the value does not give the same bytes.
    """
    try:
        value = _revive(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not canonical JSON: {exc}") from exc
    if encode(value) != data:
        raise ValueError("bytes are valid JSON but not in canonical form")
    return value


def digest(value: CanonicalValue) -> bytes:
    """SHA-256 of :func:`encode` of ``value``."""
    return hashlib.sha256(encode(value)).digest()

"""Canonical safetensors encoding of :class:`~fedswarm.core.parameters.Parameters` and their digest.

The safetensors format (a little-endian u64 header length, a JSON header, then raw little-endian data)
leaves some freedom: key order in the header, the order of tensors in the data section, padding. This
module fixes all of it, so the same values always give the same bytes, on every machine and run:

* tensors are laid out in the data section in sorted-name order, without gaps;
* the header is JSON with sorted keys and no whitespace, padded with spaces to a multiple of 8 bytes;
* there is no ``__metadata__`` entry;
* data is little-endian; floating-point ``-0.0`` is stored as ``+0.0``.

The output is an ordinary safetensors file that the ``safetensors`` library reads, and :func:`decode`
reads files written by that library. :func:`digest` is SHA-256 over :func:`encode`: the content address
that the ledger records for every model and update.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ParameterError
from fedswarm.core.parameters import Parameters, Schema

__all__ = ["decode", "digest", "encode", "encoded_size", "load", "save"]

_TO_ST = {
    "f8": "F64", "f4": "F32", "f2": "F16",
    "i8": "I64", "i4": "I32", "i2": "I16", "i1": "I8",
    "u8": "U64", "u4": "U32", "u2": "U16", "u1": "U8",
    "b1": "BOOL",
}  # fmt: skip
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _st_dtype(arr: npt.NDArray[Any], name: str) -> str:
    key = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    try:
        return _TO_ST[key]
    except KeyError:
        raise ParameterError(f"tensor {name!r}: dtype {arr.dtype} has no safetensors equivalent") from None


def _header(schema: Schema) -> bytes:
    header: dict[str, Any] = {}
    offset = 0
    for spec in schema.tensors:
        dt = np.dtype(spec.dtype)
        nbytes = spec.size * dt.itemsize
        header[spec.name] = {
            "data_offsets": [offset, offset + nbytes],
            "dtype": _TO_ST[f"{dt.kind}{dt.itemsize}"],
            "shape": list(spec.shape),
        }
        offset += nbytes
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    pad = (-len(raw)) % 8
    return raw + b" " * pad


_HEADER_CACHE: dict[Schema, bytes] = {}


def _cached_header(schema: Schema) -> bytes:
    h = _HEADER_CACHE.get(schema)
    if h is None:
        if len(_HEADER_CACHE) > 256:
            _HEADER_CACHE.clear()
        h = _HEADER_CACHE[schema] = _header(schema)
    return h


def encoded_size(schema: Schema) -> int:
    """Number of bytes :func:`encode` produces for parameters of this schema (no encoding needed)."""
    return 8 + len(_cached_header(schema)) + sum(t.size * np.dtype(t.dtype).itemsize for t in schema.tensors)


def _canonical_array(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    if le.dtype.kind == "f":
        le = le + le.dtype.type(0.0)  # -0.0 + 0.0 == +0.0 in IEEE 754 round-to-nearest
    return np.ascontiguousarray(le)


def encode(parameters: Parameters) -> bytes:
    """Canonical safetensors bytes of ``parameters``."""
    for name, arr in parameters.items():
        _st_dtype(arr, name)
    header = _cached_header(parameters.schema)
    parts = [struct.pack("<Q", len(header)), header]
    parts.extend(_canonical_array(a).tobytes() for a in parameters.values())
    return b"".join(parts)


def digest(parameters: Parameters) -> str:
    """Lower-case hex SHA-256 of :func:`encode` of ``parameters``."""
    h = hashlib.sha256()
    header = _cached_header(parameters.schema)
    h.update(struct.pack("<Q", len(header)))
    h.update(header)
    for name, arr in parameters.items():
        _st_dtype(arr, name)
        h.update(_canonical_array(arr).reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def decode(data: bytes, *, source: str = "<bytes>") -> Parameters:
    """Parse safetensors bytes (canonical or not) into :class:`Parameters`.

    Raises
    ------
    ParameterError
        Truncated or malformed input; the message names ``source`` and what is wrong.
    """
    if len(data) < 8:
        raise ParameterError(f"{source}: truncated safetensors data ({len(data)} bytes, header length missing)")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > _MAX_HEADER or 8 + hlen > len(data):
        raise ParameterError(f"{source}: truncated or corrupt safetensors header (declares {hlen} bytes)")
    try:
        header = json.loads(data[8 : 8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParameterError(f"{source}: safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ParameterError(f"{source}: safetensors header is not a JSON object")
    body = memoryview(data)[8 + hlen :]
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_FROM_ST[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{source}: tensor {name!r} has a malformed header entry") from exc
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != expected or begin < 0 or end > len(body):
            raise ParameterError(
                f"{source}: tensor {name!r} data [{begin}, {end}) is truncated or inconsistent with its shape"
            )
        arr = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
        arrays[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return Parameters(arrays)


def save(parameters: Parameters, path: str | Path) -> str:
    """Write the canonical encoding atomically (temp file + rename); return the digest."""
    path = Path(path)
    data = encode(parameters)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def load(path: str | Path) -> Parameters:
    """Read a safetensors file; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read model file: {exc.strerror}") from exc
    return decode(data, source=str(path))

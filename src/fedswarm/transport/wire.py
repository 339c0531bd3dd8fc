"""Conversions between the round engine's values and their wire form.

Models and strategy state travel as canonical safetensors (:mod:`fedswarm.codec.tensors`), so their
digest is the content address the ledger records. An update travels as one float64 tensor named
``update``: the exact bytes of the vector the member computed, so a network run aggregates bit-identical
inputs to a simulation of the same spec. :func:`encode_update` writes those bytes (the same as
:func:`fedswarm.codec.tensors.encode` would) straight into one buffer, and :func:`decode_update` reads a
received buffer in place, so neither side holds more than one copy of an update.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import sys
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from fedswarm.codec import tensors
from fedswarm.core.errors import ParameterError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import FitConfig, Scalar
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.envelope import MessageRefused

__all__ = [
    "UPDATE_TENSOR",
    "config_from_wire",
    "config_to_wire",
    "decode_parameters",
    "decode_update",
    "encode_update",
    "encoded_update_size",
    "sha256_hex",
]

UPDATE_TENSOR = "update"


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lower-case hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def _scalar_to_wire(value: Scalar) -> pb.Scalar:
    if isinstance(value, bool):
        return pb.Scalar(bool_value=value)
    if isinstance(value, int):
        return pb.Scalar(int_value=value)
    if isinstance(value, float):
        return pb.Scalar(float_value=value)
    return pb.Scalar(string_value=str(value))


def _scalar_from_wire(value: pb.Scalar) -> Scalar:
    which = value.WhichOneof("value")
    if which == "bool_value":
        return bool(value.bool_value)
    if which == "int_value":
        return int(value.int_value)
    if which == "float_value":
        return float(value.float_value)
    return str(value.string_value)


def config_to_wire(config: FitConfig) -> pb.FitConfig:
    """The wire form of a member's fit configuration."""
    return pb.FitConfig(
        round=config.round,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        proximal_mu=config.proximal_mu,
        extra={k: _scalar_to_wire(v) for k, v in config.extra.items()},
    )


def config_from_wire(config: pb.FitConfig) -> FitConfig:
    """Inverse of :func:`config_to_wire`."""
    return FitConfig(
        round=int(config.round),
        epochs=int(config.epochs),
        batch_size=int(config.batch_size),
        learning_rate=float(config.learning_rate),
        seed=int(config.seed),
        proximal_mu=float(config.proximal_mu),
        extra={k: _scalar_from_wire(v) for k, v in config.extra.items()},
    )


@functools.lru_cache(maxsize=64)
def _update_header(shape: tuple[int, ...]) -> bytes:
    """The canonical safetensors header of one float64 tensor ``update`` (sorted keys, padded to 8 bytes)."""
    n = 8 * int(np.prod(shape, dtype=np.int64))
    entry = {UPDATE_TENSOR: {"data_offsets": [0, n], "dtype": "F64", "shape": list(shape)}}
    raw = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return raw + b" " * (-len(raw) % 8)


def encoded_update_size(count: int) -> int:
    """Length of :func:`encode_update` of a vector of ``count`` values."""
    return 8 + len(_update_header((count,))) + 8 * count


def encode_update(update: npt.NDArray[np.float64]) -> bytearray:
    """Canonical safetensors bytes of an update vector (one float64 tensor, exact values, ``-0.0`` as ``+0.0``).

    The values are written once, into the returned buffer: encoding holds no other copy of the update.
    """
    arr = np.asarray(update, dtype=np.float64)
    header = _update_header(arr.shape)
    start = 8 + len(header)
    out = bytearray(start + 8 * arr.size)
    out[:8] = struct.pack("<Q", len(header))
    out[8:start] = header
    body = np.frombuffer(out, dtype="<f8", offset=start, count=arr.size).reshape(arr.shape)
    np.add(arr, 0.0, out=body)  # -0.0 + 0.0 == +0.0, as the canonical encoding stores it
    return out


def decode_parameters(data: bytes | bytearray, *, source: str) -> Parameters:
    """Parse safetensors bytes received from the network.

    Raises
    ------
    MessageRefused
        ``malformed``: the bytes are not safetensors (the message says why).
    """
    try:
        return tensors.decode(cast(bytes, data), source=source)
    except ParameterError as exc:
        raise MessageRefused("malformed", str(exc)) from None


_SHAPES: dict[bytes, tuple[int, ...]] = {}  # canonical headers seen, and the shape each declares


def _canonical(data: bytes | bytearray) -> npt.NDArray[np.float64] | None:
    """The update in a canonical encoding, read in place from ``data``; ``None`` for anything else."""
    if sys.byteorder != "little" or len(data) < 8:
        return None
    (hlen,) = struct.unpack_from("<Q", data)
    raw = bytes(data[8 : 8 + hlen])
    shape = _SHAPES.get(raw)  # every update of a run has the same header: parse it once
    if shape is None:
        try:
            entry = json.loads(raw)[UPDATE_TENSOR]
            shape = tuple(int(v) for v in entry["shape"])
        except (ValueError, KeyError, TypeError):
            return None
        if raw != _update_header(shape):
            return None
        if len(_SHAPES) >= 64:
            _SHAPES.clear()
        _SHAPES[raw] = shape
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != 8 + hlen + 8 * count:
        return None
    arr: npt.NDArray[np.float64] = np.frombuffer(data, dtype=np.float64, offset=8 + hlen, count=count)
    return arr.reshape(-1) if len(shape) <= 1 else arr.reshape(shape)


def decode_update(data: bytes | bytearray, *, source: str) -> npt.NDArray[np.float64]:
    """Parse an update; a wrong tensor name or dtype is refused, a wrong length is left to the round engine.

    A received buffer (``bytearray``) in the canonical encoding is read in place: the returned array
    shares its memory. Immutable ``bytes`` (a small update that came inline) are copied into a new array,
    and so is any other encoding.

    Raises
    ------
    MessageRefused
        ``malformed``: not safetensors, or not exactly one tensor ``update``.
    """
    canonical = _canonical(data)
    if canonical is not None:
        return canonical if isinstance(data, bytearray) else canonical.copy()
    params = decode_parameters(data, source=source)
    names = list(params)
    if names != [UPDATE_TENSOR]:
        raise MessageRefused("malformed", f"{source}: expected one tensor {UPDATE_TENSOR!r}, got {names}")
    arr: npt.NDArray[Any] = params[UPDATE_TENSOR]
    if arr.dtype.kind != "f":
        raise MessageRefused("malformed", f"{source}: update has dtype {arr.dtype}, expected float64")
    return np.asarray(arr, dtype=np.float64).reshape(-1) if arr.ndim <= 1 else np.asarray(arr, dtype=np.float64)


def metrics_to_wire(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics as a plain ``str -> float`` map."""
    return {str(k): float(v) for k, v in metrics.items()}

"""Conversions between the round engine's values and their wire form.

Models and strategy state travel as canonical safetensors (:mod:`fedswarm.codec.tensors`), so their
digest is the content address the ledger records. An update travels as one float64 tensor named
``update``: the exact bytes of the vector the member computed, so a network run aggregates bit-identical
inputs to a simulation of the same spec.
"""

from __future__ import annotations

import hashlib
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


def encode_update(update: npt.NDArray[np.float64]) -> bytes:
    """Safetensors bytes of an update vector (one float64 tensor, exact values)."""
    return tensors.encode(Parameters({UPDATE_TENSOR: np.ascontiguousarray(update, dtype=np.float64)}))


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


def decode_update(data: bytes | bytearray, *, source: str) -> npt.NDArray[np.float64]:
    """Parse an update; a wrong tensor name or dtype is refused, a wrong length is left to the round engine.

    Raises
    ------
    MessageRefused
        ``malformed``: not safetensors, or not exactly one tensor ``update``.
    """
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

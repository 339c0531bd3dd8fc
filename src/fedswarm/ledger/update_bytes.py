"""Canonical bytes of a round's updates, built from one header for the whole update matrix.

An accepted update is one float64 row of the round's update matrix; the ledger names it by the digest
of its canonical safetensors encoding as named float64 tensors (see :mod:`fedswarm.ledger.recorder`).
For a schema whose every dtype is little-endian float64, :func:`fedswarm.codec.tensors.encode` of
``Parameters.unflatten(row, schema)`` is always the same prefix (the header length and the JSON header,
which depend only on the schema) followed by the row's values in schema order, little-endian, with
``-0.0`` written as ``+0.0``. :func:`encode_rows` builds that prefix once and appends each row's bytes,
instead of splitting every row into tensors and encoding them one by one; tests hold it to the same
bytes as the tensor encoder.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import encode, encoded_size
from fedswarm.core.parameters import Parameters, Schema

__all__ = ["encode_rows", "rows_prefix"]

_FLOAT64 = np.dtype("<f8")
_PREFIXES: dict[Schema, bytes] = {}


def rows_prefix(schema: Schema) -> bytes:
    """The bytes that start the canonical encoding of any parameters of ``schema`` (all float64 tensors).

    Raises
    ------
    ValueError
        If a tensor of ``schema`` is not little-endian float64.
    """
    prefix = _PREFIXES.get(schema)
    if prefix is None:
        for tensor in schema.tensors:
            if np.dtype(tensor.dtype) != _FLOAT64:
                raise ValueError(f"tensor {tensor.name!r} has dtype {tensor.dtype}, update rows are float64")
        size = encoded_size(schema)
        prefix = encode(Parameters.unflatten(np.zeros(schema.size), schema))[: size - schema.size * _FLOAT64.itemsize]
        if len(_PREFIXES) > 64:
            _PREFIXES.clear()
        _PREFIXES[schema] = prefix
    return prefix


def encode_rows(rows: npt.NDArray[np.float64], schema: Schema) -> list[bytes]:
    """``encode(Parameters.unflatten(row, schema))`` for every row of ``rows``, in order.

    Raises
    ------
    ValueError
        If ``rows`` is not a matrix of ``schema.size`` columns or ``schema`` is not all float64.
    """
    matrix = np.asarray(rows)
    if matrix.ndim != 2 or matrix.shape[1] != schema.size:
        raise ValueError(f"update rows of shape {list(matrix.shape)} do not match a schema of {schema.size} scalars")
    prefix = rows_prefix(schema)
    positive_zeros = matrix.astype(np.float64, copy=False) + 0.0  # -0.0 + 0.0 == +0.0
    canonical = np.ascontiguousarray(positive_zeros.astype(_FLOAT64, copy=False))
    return [prefix + row.tobytes() for row in canonical]

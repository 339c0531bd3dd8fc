"""Model parameters as named arrays.

A model's parameters are an ordered mapping from tensor names to numpy arrays. The order is the order of
the names sorted lexicographically, so two ``Parameters`` with the same content flatten to the same vector
regardless of how they were built. Updates (the difference between a member's new parameters and the
global model) are ``Parameters`` too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ParameterError

__all__ = ["Parameters", "Schema", "TensorSpec"]

_ALLOWED_KINDS = frozenset("fiub")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and dtype of one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True, slots=True)
class Schema:
    """The names, shapes and dtypes of a model's tensors, in canonical (sorted) order."""

    tensors: tuple[TensorSpec, ...]

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return sum(t.size for t in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def describe(self) -> str:
        return ", ".join(f"{t.name}{list(t.shape)}:{t.dtype}" for t in self.tensors)


def _as_array(name: str, value: Any) -> npt.NDArray[Any]:
    arr = np.asarray(value)
    if arr.dtype.kind not in _ALLOWED_KINDS:
        raise ParameterError(f"tensor {name!r} has unsupported dtype {arr.dtype} (numeric arrays only)")
    return arr


class Parameters(Mapping[str, npt.NDArray[Any]]):
    """An immutable-by-convention mapping of tensor name to array, iterated in sorted name order.

    Parameters
    ----------
    arrays
        Tensor name to array (anything ``np.asarray`` accepts). Names must be non-empty strings.
    """

    __slots__ = ("_arrays", "_schema")

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        items: dict[str, npt.NDArray[Any]] = {}
        for name in sorted(arrays):
            if not isinstance(name, str) or not name:
                raise ParameterError(f"tensor names must be non-empty strings, got {name!r}")
            items[name] = _as_array(name, arrays[name])
        self._arrays = items
        self._schema: Schema | None = None

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        return f"Parameters({self.schema.describe()})"

    # Structure ------------------------------------------------------------------------------
    @property
    def schema(self) -> Schema:
        if self._schema is None:
            self._schema = Schema(
                tuple(TensorSpec(n, tuple(int(s) for s in a.shape), a.dtype.str) for n, a in self._arrays.items())
            )
        return self._schema

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def check_schema(self, expected: Schema, *, who: str) -> None:
        """Raise :class:`ParameterError` naming the first tensor that differs from ``expected``.

        Dtypes are compared by kind only (float vs int), since members may compute in another precision.
        """
        names = set(self._arrays)
        want = {t.name: t for t in expected.tensors}
        missing = sorted(set(want) - names)
        extra = sorted(names - set(want))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing tensor(s) {missing}")
            if extra:
                parts.append(f"unexpected tensor(s) {extra}")
            raise ParameterError(f"{who}: {'; '.join(parts)}; expected {expected.describe()}")
        for name, spec in want.items():
            arr = self._arrays[name]
            if tuple(arr.shape) != spec.shape:
                raise ParameterError(f"{who}: tensor {name!r} has shape {list(arr.shape)}, expected {list(spec.shape)}")
            if arr.dtype.kind != np.dtype(spec.dtype).kind:
                raise ParameterError(f"{who}: tensor {name!r} has dtype {arr.dtype}, expected {spec.dtype}")

    # Vector view ----------------------------------------------------------------------------
    def flatten(self, dtype: npt.DTypeLike = np.float64) -> npt.NDArray[Any]:
        """Concatenate all tensors (in name order) into one 1-D array of ``dtype``."""
        arrays = list(self._arrays.values())
        if not arrays:
            return np.zeros(0, dtype=dtype)
        if len(arrays) == 1:
            return arrays[0].astype(dtype, copy=True).reshape(-1)
        return np.concatenate([a.reshape(-1) for a in arrays]).astype(dtype, copy=False)

    @classmethod
    def unflatten(cls, vector: npt.NDArray[Any], schema: Schema) -> Parameters:
        """Inverse of :meth:`flatten`: split ``vector`` by ``schema`` and cast to each tensor's dtype."""
        vector = np.asarray(vector)
        if vector.ndim != 1 or vector.shape[0] != schema.size:
            raise ParameterError(f"vector of shape {list(vector.shape)} does not match schema of {schema.size} scalars")
        out: dict[str, npt.NDArray[Any]] = {}
        offset = 0
        for spec in schema.tensors:
            n = spec.size
            out[spec.name] = vector[offset : offset + n].reshape(spec.shape).astype(spec.dtype, copy=False)
            offset += n
        p = cls.__new__(cls)
        p._arrays = out
        p._schema = schema
        return p

    def map(self, fn: Any) -> Parameters:
        """Apply ``fn(array) -> array`` to every tensor."""
        return Parameters({k: fn(v) for k, v in self._arrays.items()})

    def copy(self) -> Parameters:
        return Parameters({k: v.copy() for k, v in self._arrays.items()})

    def all_finite(self) -> bool:
        return all(bool(np.isfinite(a).all()) for a in self._arrays.values() if a.dtype.kind == "f")

    def allclose(self, other: Mapping[str, Any], *, atol: float = 0.0, rtol: float = 0.0) -> bool:
        if set(self) != set(other):
            return False
        return all(
            np.shape(self[k]) == np.shape(other[k]) and np.allclose(self[k], other[k], atol=atol, rtol=rtol)
            for k in self
        )

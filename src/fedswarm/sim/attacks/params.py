"""Typed access to ``[attack].parameters``; every error names ``attack.parameters.<key>``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fedswarm.core.errors import SpecError

__all__ = ["AttackParameters", "Value"]

Value = bool | int | float | str | Sequence[int] | Sequence[float]


class AttackParameters:
    """The parameters of one attack kind; unknown keys are refused."""

    def __init__(self, kind: str, values: Mapping[str, Value], allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            known = ", ".join(allowed) if allowed else "none"
            raise SpecError(
                f"attack.parameters.{unknown[0]}", f"unknown parameter for attack {kind!r} (known: {known})"
            )
        self.kind = kind
        self.values = values

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"attack.parameters.{key}", f"{message} (attack {self.kind!r})")

    def has(self, key: str) -> bool:
        return key in self.values

    def real(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x) or (positive and x <= 0):
            raise self.fail(key, f"must be a finite number{' > 0' if positive else ''}, got {x:g}")
        return x

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.values.get(key, default)
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return value

    def fraction(self, key: str, default: float) -> float:
        x = self.real(key, default)
        if not 0.0 < x <= 1.0:
            raise self.fail(key, f"must be in (0, 1], got {x:g}")
        return x

    def label(self, key: str, default: int | None, *, classes: int) -> int | None:
        value = self.values.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a class index (integer), got {value!r}")
        if not 0 <= value < classes:
            raise self.fail(key, f"must be a class index in 0..{classes - 1}, got {value}")
        return value

    def indices(self, key: str, default: Sequence[int], *, size: int) -> tuple[int, ...]:
        value = self.values.get(key, list(default))
        if not isinstance(value, list | tuple) or not value:
            raise self.fail(key, f"must be a non-empty list of feature indices, got {value!r}")
        out: list[int] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < size:
                raise self.fail(key, f"feature indices must be integers in 0..{size - 1}, got {item!r}")
            out.append(item)
        if len(set(out)) != len(out):
            raise self.fail(key, "feature indices must be distinct")
        return tuple(out)

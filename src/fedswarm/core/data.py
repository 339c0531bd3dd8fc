"""Plain containers for local data as the task API sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Arrays", "LocalData"]


@dataclass(frozen=True, slots=True)
class Arrays:
    """Features ``x`` (2-D, float32) and labels ``y`` (1-D, int64) of one split."""

    x: npt.NDArray[Any]
    y: npt.NDArray[Any]

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @staticmethod
    def concatenate(parts: list[Arrays]) -> Arrays:
        return Arrays(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))


@dataclass(frozen=True, slots=True)
class LocalData:
    """One member's data: a local training split and a local test split.

    ``num_classes`` is the federation-wide number of classes (a member may not see all of them).
    """

    train: Arrays
    test: Arrays
    num_classes: int

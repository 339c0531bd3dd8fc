"""Label flipping: the attacker trains honestly on wrongly labelled data (data poisoning; Biggio, Nelson,
Laskov 2012, "Poisoning Attacks against Support Vector Machines"; in federated learning Tolpegin, Truex,
Gursoy, Liu 2020, "Data Poisoning Attacks Against Federated Learning Systems").

Untargeted (default): every label ``y`` becomes ``C - 1 - y`` (``C`` classes). Targeted: with ``source``
and ``target``, only examples of class ``source`` are relabelled ``target``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedswarm.core.data import Arrays
from fedswarm.core.errors import SpecError
from fedswarm.sim.attacks.base import Attack
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["LabelFlip", "build_label_flip"]


class LabelFlip(Attack):
    kind: ClassVar[str] = "label_flip"

    def __init__(self, *, classes: int, source: int | None = None, target: int | None = None) -> None:
        self.classes = classes
        self.source = source
        self.target = target

    def flip(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The poisoned labels for labels ``y``."""
        if self.source is None or self.target is None:
            return np.asarray(self.classes - 1 - y, dtype=y.dtype)
        return np.where(y == self.source, self.target, y).astype(y.dtype)

    def poison(self, member: int, train: Arrays) -> Arrays:
        return Arrays(train.x, self.flip(train.y))

    def describe(self) -> dict[str, Any]:
        if self.source is None:
            return {"flip": "y -> classes - 1 - y"}
        return {"source": self.source, "target": self.target}


def build_label_flip(params: AttackParameters, *, classes: int) -> LabelFlip:
    source = params.label("source", None, classes=classes)
    target = params.label("target", None, classes=classes)
    if (source is None) != (target is None):
        raise SpecError("attack.parameters.target", "targeted label flipping needs both source and target")
    if source is not None and source == target:
        raise SpecError("attack.parameters.target", f"target must differ from source ({source})")
    return LabelFlip(classes=classes, source=source, target=target)

"""Scaling: model replacement (Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2020, "How To Backdoor Federated
Learning", AISTATS) and explicit boosting (Bhagoji, Chakraborty, Mittal, Calo 2019, "Analyzing Federated
Learning through an Adversarial Lens", ICML).

The attacker first trains a *poisoned* model ``X`` from the global model ``G`` — by default on its own
data with every label ``y`` replaced by ``C - 1 - y`` (``poison = "label_flip"``, an untargeted malicious
objective) — and then sends its poisoned update scaled up,

    sent = gamma * (X - G).

Why this replaces the model: FedAvg's next model is ``G + eta * (1/n) sum_i update_i`` (``eta`` the server
learning rate, ``n`` updates). Bagdasaryan et al. solve for the update that makes it ``X``; assuming the
honest updates roughly cancel, it is ``(n / eta) * (X - G)``: one attacker scales by ``gamma = n / eta``.
With ``f`` colluding attackers (each training its own ``X_k``) the replacement is shared: each scales by

    gamma = n / (f * eta),

so that the attackers' scaled updates sum to ``(n / eta)`` times the mean of their poisoned updates and
the next model is about the mean of their poisoned models (plus the honest members' ``(n - f) / n`` share
of a step). ``n`` and ``f`` are the round's selected members and attackers; with FedAvg's example
weights the share is exact when every member has the same number of examples. This is Bhagoji et al.'s
explicit boosting by the inverse of the attackers' share (``1 / alpha = n / f``). ``factor`` overrides
``gamma`` with a fixed number (for FedOpt's adaptive steps, where ``eta`` is not a plain step size,
``server_lr`` is still used in the formula, which then only sets the scale).

``poison = "none"`` keeps the attacker's own *honest* update and only scales it (a boosted benign
update: it overshoots but points the right way, and a convex task recovers from it).

Norm bounding (Sun et al. 2019, ``clipped_mean``) is the matching defence: a clipped replacement update
counts no more than any other update of norm ``max_norm``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from fedswarm.core.data import Arrays
from fedswarm.sim.attacks.base import Attack, Vector
from fedswarm.sim.attacks.label_flip import LabelFlip
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["Poison", "Scaling", "build_scaling", "replacement_factor"]

Poison = Literal["label_flip", "none"]
"""What the attacker trains on before it scales: flipped labels (model replacement), or its own data."""


def replacement_factor(n: int, f: int, *, server_lr: float) -> float:
    """``gamma = n / (f * server_lr)``: the scale at which ``f`` attackers among ``n`` replace the model.

    ``f = 1`` gives Bagdasaryan et al.'s ``n / eta``.
    """
    return n / (max(f, 1) * server_lr)


class Scaling(Attack):
    """Model replacement: a poisoned update scaled by ``factor``, or by :func:`replacement_factor` if unset."""

    kind: ClassVar[str] = "scaling"

    def __init__(
        self, *, classes: int, factor: float | None = None, poison: Poison = "label_flip", server_lr: float = 1.0
    ) -> None:
        self.factor = factor
        self.objective: Poison = poison
        self.server_lr = server_lr
        self._flip = LabelFlip(classes=classes)

    def poison(self, member: int, train: Arrays) -> Arrays:
        return self._flip.poison(member, train) if self.objective == "label_flip" else train

    def gamma(self, *, n: int, f: int) -> float:
        """The scale of the round: ``factor``, or ``n / (f * server_lr)``."""
        return self.factor if self.factor is not None else replacement_factor(n, f, server_lr=self.server_lr)

    def transform(self, update: Vector, *, member: int, rnd: int, n: int, f: int) -> Vector:
        return self.gamma(n=n, f=f) * update

    def describe(self) -> dict[str, Any]:
        factor: float | str = self.factor if self.factor is not None else f"n / (f * {self.server_lr:g})"
        return {"factor": factor, "poison": self.objective}


def build_scaling(params: AttackParameters, *, classes: int, server_lr: float) -> Scaling:
    poison = params.choice("poison", "label_flip", get_args(Poison))
    return Scaling(
        classes=classes,
        factor=params.real("factor", 1.0, positive=True) if params.has("factor") else None,
        poison="label_flip" if poison == "label_flip" else "none",
        server_lr=server_lr,
    )

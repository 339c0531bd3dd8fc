"""FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization").

The aggregated update (mean, or a robust rule's output) is used as a pseudo-gradient by a server-side
adaptive optimizer; see :func:`fedswarm.aggregation.fedopt.fedopt_step`. The moments are the strategy's
state: they serialize with :meth:`state_dict` (beside the rule's state) so a run resumes exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation.fedopt import FedOptVariant, fedopt_step
from fedswarm.core.errors import ConfigurationError
from fedswarm.strategy.base import AggregationRule, LocalTraining, Sampling, Strategy, Vector

__all__ = ["FedAdagrad", "FedAdam", "FedOpt", "FedYogi"]


class FedOpt(Strategy):
    variant: ClassVar[FedOptVariant] = "adam"

    def __init__(
        self,
        *,
        sampling: Sampling,
        training: LocalTraining,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        rule: AggregationRule | None = None,
        seed: int = 0,
    ) -> None:
        if not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
            raise ConfigurationError(f"strategy.beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
        if tau <= 0:
            raise ConfigurationError(f"strategy.tau must be > 0, got {tau}")
        super().__init__(sampling=sampling, training=training, rule=rule, server_lr=server_lr, seed=seed)
        self.beta1, self.beta2, self.tau = float(beta1), float(beta2), float(tau)
        self._m: Vector | None = None
        self._v: Vector | None = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}

    def server_update(self, x: Vector, delta: Vector) -> Vector:
        if self._m is None or self._v is None or self._m.shape != x.shape:
            self._m = np.zeros_like(x)
            self._v = np.full_like(x, self.tau * self.tau)
        x_new, self._m, self._v = fedopt_step(
            x, delta, self._m, self._v,
            variant=self.variant, eta=self.server_lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau,
        )  # fmt: skip
        return x_new

    def server_state(self) -> dict[str, npt.NDArray[Any]]:
        if self._m is None or self._v is None:
            return {}
        return {"m": self._m.copy(), "v": self._v.copy()}

    def load_server_state(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        if not state:
            self._m = self._v = None
            return
        if set(state) != {"m", "v"}:
            raise ConfigurationError(f"{self.name} state needs keys m and v, got {sorted(state)}")
        self._m = np.asarray(state["m"], dtype=np.float64).copy()
        self._v = np.asarray(state["v"], dtype=np.float64).copy()


class FedAdam(FedOpt):
    name = "fedadam"
    variant = "adam"


class FedYogi(FedOpt):
    name = "fedyogi"
    variant = "yogi"


class FedAdagrad(FedOpt):
    name = "fedadagrad"
    variant = "adagrad"

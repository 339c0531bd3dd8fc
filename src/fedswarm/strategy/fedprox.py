"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks", MLSys).

Aggregation is FedAvg's; members add the proximal term μ/2·‖w − w_global‖² to their local objective,
which keeps local models near the global one under non-IID data. The task applies the term when it sees
``FitConfig.proximal_mu > 0`` (the built-in numpy, scikit-learn and PyTorch tasks do).
"""

from __future__ import annotations

from fedswarm.core.errors import ConfigurationError
from fedswarm.strategy.base import AggregationRule, LocalTraining, Sampling, Strategy

__all__ = ["FedProx"]


class FedProx(Strategy):
    name = "fedprox"

    def __init__(
        self,
        *,
        sampling: Sampling,
        training: LocalTraining,
        mu: float = 0.01,
        rule: AggregationRule | None = None,
        server_lr: float = 1.0,
        seed: int = 0,
    ) -> None:
        if mu < 0:
            raise ConfigurationError(f"strategy.mu must be >= 0, got {mu}")
        super().__init__(sampling=sampling, training=training, rule=rule, server_lr=server_lr, seed=seed)
        self.mu = float(mu)

    def proximal_mu(self) -> float:
        return self.mu

"""FedAvg (McMahan et al. 2017): the global model moves to the example-weighted mean of members' models."""

from __future__ import annotations

from fedswarm.strategy.base import Strategy

__all__ = ["FedAvg"]


class FedAvg(Strategy):
    """Federated averaging; with ``server_lr=1`` the new model is the weighted mean of local models."""

    name = "fedavg"

"""Aggregation rule objects over the Byzantine-robust functions of :mod:`fedswarm.aggregation`.

Each rule implements :class:`~fedswarm.strategy.base.AggregationRule`: the strategy applies it to the
round's (n, d) matrix of *updates* and then takes its server step (FedAvg's ``x + server_lr * delta`` or a
FedOpt adaptive step), so every rule composes with every server optimizer. The spec names them in
``[strategy.rule]`` (registry: :mod:`fedswarm.spec.rules`).

Weights are the members' numbers of training examples, which members report themselves: a Byzantine
member can claim any number. The robust rules therefore ignore them unless ``weighted`` is set; the mean
and norm bounding (``clipped_mean``) use them by default, as FedAvg does.

Two rules carry per-round state or inputs:

* :class:`CenteredClippingRule` clips around the previous round's aggregate (its center starts at 0), as
  Karimireddy, He and Jaggi (2021) clip around the previous momentum; the center is the rule's state.
* :class:`FLTrustRule` needs the aggregator's own update on its root data set for the current global model
  (Cao et al. 2021). The robustness extension computes it before the round's updates are aggregated and
  hands it over through :mod:`fedswarm.rounds.robust.server_update`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation import (
    bulyan,
    centered_clipping,
    clipped_mean,
    fltrust,
    geometric_median,
    krum,
    median,
    multi_krum,
    trimmed_mean,
)
from fedswarm.rounds.robust.server_update import take_server_update

__all__ = [
    "BulyanRule",
    "CenteredClippingRule",
    "ClippedMeanRule",
    "FLTrustRule",
    "GeometricMedianRule",
    "KrumRule",
    "MedianRule",
    "MultiKrumRule",
    "TrimmedMeanRule",
]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MedianRule:
    """Coordinate-wise median (Yin et al. 2018)."""

    weighted: bool = False
    name: str = "median"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return median(updates, weights=weights if self.weighted else None)


@dataclass(frozen=True, slots=True)
class TrimmedMeanRule:
    """Coordinate-wise trimmed mean, ``floor(beta * n)`` values cut at each end (Yin et al. 2018)."""

    beta: float = 0.1
    name: str = "trimmed_mean"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return trimmed_mean(updates, beta=self.beta)


@dataclass(frozen=True, slots=True)
class KrumRule:
    """Krum (Blanchard et al. 2017): the update closest to its ``n - f - 2`` nearest neighbours."""

    f: int
    name: str = "krum"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return krum(updates, f=self.f)


@dataclass(frozen=True, slots=True)
class MultiKrumRule:
    """Multi-Krum: the uniform mean of the ``m`` best-scored updates (``m`` unset: ``n - f``)."""

    f: int
    m: int | None = None
    name: str = "multi_krum"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        n = int(np.shape(updates)[0])
        return multi_krum(updates, f=self.f, m=self.m if self.m is not None else max(1, n - self.f))


@dataclass(frozen=True, slots=True)
class BulyanRule:
    """Bulyan over Krum (El Mhamdi et al. 2018); needs ``n >= 4f + 3``."""

    f: int
    name: str = "bulyan"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return bulyan(updates, f=self.f)


@dataclass(frozen=True, slots=True)
class GeometricMedianRule:
    """Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla et al. 2022)."""

    tol: float = 1e-6
    max_iter: int = 100
    eps: float = 1e-8
    weighted: bool = False
    name: str = "geometric_median"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return geometric_median(
            updates,
            weights=weights if self.weighted else None,
            tol=self.tol,
            max_iter=self.max_iter,
            eps=self.eps,
        )


@dataclass(frozen=True, slots=True)
class ClippedMeanRule:
    """Norm bounding (Sun et al. 2019): every update clipped to ``max_norm`` at the aggregator, then the mean.

    Server-side, so it binds members that skip their own client stages.
    """

    max_norm: float
    weighted: bool = True
    name: str = "clipped_mean"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return clipped_mean(updates, max_norm=self.max_norm, weights=weights if self.weighted else None)


@dataclass(slots=True)
class CenteredClippingRule:
    """Centered clipping (Karimireddy, He, Jaggi 2021) around the previous round's aggregate.

    The center starts at 0 and becomes each round's output; :meth:`state_dict` exposes it so a replay or
    a resumed run continues from the same center.
    """

    tau: float
    iterations: int = 1
    name: str = "centered_clipping"
    needs_individual_updates: bool = True
    center: Vector | None = field(default=None, repr=False)

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        d = int(np.shape(updates)[1])
        start = self.center if self.center is not None and self.center.shape == (d,) else np.zeros(d)
        out = centered_clipping(updates, tau=self.tau, center=start, iterations=self.iterations)
        self.center = out.copy()
        return out

    def state_dict(self) -> dict[str, Vector]:
        return {} if self.center is None else {"center": self.center.copy()}

    def load_state_dict(self, state: dict[str, Vector]) -> None:
        self.center = np.asarray(state["center"], dtype=np.float64).copy() if "center" in state else None


@dataclass(frozen=True, slots=True)
class FLTrustRule:
    """FLTrust (Cao et al. 2021): trust from the cosine with the aggregator's root-data update.

    ``root_size`` is the number of root examples the robustness extension samples for the aggregator.
    Raises :class:`~fedswarm.core.errors.ConfigurationError` when the round's server update was not
    computed (the rule was used outside a run that built the robustness extension).
    """

    root_size: int = 100
    name: str = "fltrust"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        d = int(np.shape(updates)[1])
        return fltrust(updates, server_update=take_server_update(d))

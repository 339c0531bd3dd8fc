"""Aggregation rule objects over the Byzantine-robust functions of :mod:`fedswarm.aggregation`.

Each rule implements :class:`~fedswarm.strategy.base.AggregationRule`: the strategy applies it to the
round's (n, d) matrix of *updates* and then takes its server step (FedAvg's ``x + server_lr * delta`` or a
FedOpt adaptive step), so every rule composes with every server optimizer. The spec names them in
``[strategy.rule]`` (registry: :mod:`fedswarm.spec.rules`).

Weights are the members' numbers of training examples, which members report themselves: a Byzantine
member can claim any number. The robust rules therefore ignore them unless ``weighted`` is set; the mean
and norm bounding (``clipped_mean``) use them by default, as FedAvg does.

Every robust rule takes ``bucket_size`` (default 1: off): the round's updates are first averaged in random
buckets of that size and the rule aggregates the bucket means (bucketing, Karimireddy, He and Jaggi 2022,
for heterogeneous data; :mod:`fedswarm.aggregation.bucketing`). The buckets of the ``k``-th aggregation
(round ``k`` of a run) are drawn from ``(bucket_seed, k)`` (the spec builder passes the run seed), so a
replay from the first round draws the same buckets.

A rule's state (the aggregation counter that seeds its buckets; centered clipping's center) serializes
with ``state_dict()`` as named arrays, and :meth:`fedswarm.strategy.base.Strategy.state_dict` includes it,
so a run resumed from a saved state, or continued by another leader, aggregates exactly as one that never
stopped.

Two rules carry per-round state or inputs:

* :class:`CenteredClippingRule` clips around the previous round's aggregate (its center starts at 0), as
  Karimireddy, He and Jaggi (2021) clip around the previous momentum; the center is the rule's state.
* :class:`FLTrustRule` needs the aggregator's own update on its root data set for the current global model
  (Cao et al. 2021). The robustness extension computes it before the round's updates are aggregated and
  hands it over through :mod:`fedswarm.rounds.robust.server_update`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation import (
    bucket_means,
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
from fedswarm.core.errors import ConfigurationError
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

_BUCKET_STREAM = 0xB0C4E7
_MASK63 = (1 << 63) - 1


@dataclass(slots=True)
class _Bucketed:
    """Optional bucketing in front of a rule: ``bucket_size`` updates averaged per random bucket."""

    bucket_size: int = field(default=1, kw_only=True)
    bucket_seed: int = field(default=0, kw_only=True)
    aggregations: int = field(default=0, init=False, repr=False, compare=False)

    def _inputs(
        self, updates: npt.NDArray[Any], weights: npt.NDArray[Any], *, weighted: bool
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The rule's inputs for this aggregation: the updates, or the bucket means and bucket weights."""
        count = self.aggregations
        self.aggregations += 1
        if self.bucket_size == 1:
            return updates, weights
        return bucket_means(
            updates,
            bucket_size=self.bucket_size,
            seed=(self.bucket_seed & _MASK63, count, _BUCKET_STREAM),
            weights=weights if weighted else None,
        )

    def state_dict(self) -> dict[str, npt.NDArray[Any]]:
        """The number of aggregations so far (it seeds the next round's buckets)."""
        return {"aggregations": np.array([self.aggregations], dtype=np.int64)}

    def load_state_dict(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Restore :meth:`state_dict` (an empty mapping: no aggregation yet).

        Raises
        ------
        ConfigurationError
            An unknown key, or a counter that is not one non-negative integer.
        """
        _check_keys(self, state, self._state_keys())
        self.aggregations = _counter(state["aggregations"]) if "aggregations" in state else 0

    def _state_keys(self) -> frozenset[str]:
        return frozenset({"aggregations"})


def _check_keys(rule: object, state: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(state) - allowed)
    if unknown:
        raise ConfigurationError(f"state of rule {getattr(rule, 'name', '?')!r}: unknown keys {unknown}")


def _counter(value: npt.ArrayLike) -> int:
    arr = np.asarray(value)
    if arr.size != 1 or not np.isfinite(arr).all() or float(arr.reshape(-1)[0]) < 0:
        raise ConfigurationError(f"rule state: aggregations must be one non-negative integer, got {arr!r}")
    x = float(arr.reshape(-1)[0])
    if x != int(x):
        raise ConfigurationError(f"rule state: aggregations must be an integer, got {x}")
    return int(x)


@dataclass(slots=True)
class MedianRule(_Bucketed):
    """Coordinate-wise median (Yin et al. 2018)."""

    weighted: bool = False
    name: str = "median"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, w = self._inputs(updates, weights, weighted=self.weighted)
        return median(x, weights=w if self.weighted else None)


@dataclass(slots=True)
class TrimmedMeanRule(_Bucketed):
    """Coordinate-wise trimmed mean, ``floor(beta * n)`` values cut at each end (Yin et al. 2018)."""

    beta: float = 0.1
    name: str = "trimmed_mean"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, _ = self._inputs(updates, weights, weighted=False)
        return trimmed_mean(x, beta=self.beta)


@dataclass(slots=True)
class KrumRule(_Bucketed):
    """Krum (Blanchard et al. 2017): the update closest to its ``n - f - 2`` nearest neighbours."""

    f: int
    name: str = "krum"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, _ = self._inputs(updates, weights, weighted=False)
        return krum(x, f=self.f)


@dataclass(slots=True)
class MultiKrumRule(_Bucketed):
    """Multi-Krum: the uniform mean of the ``m`` best-scored updates (``m`` unset: ``n - f``)."""

    f: int
    m: int | None = None
    name: str = "multi_krum"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, _ = self._inputs(updates, weights, weighted=False)
        n = int(np.shape(x)[0])
        return multi_krum(x, f=self.f, m=self.m if self.m is not None else max(1, n - self.f))


@dataclass(slots=True)
class BulyanRule(_Bucketed):
    """Bulyan over Krum (El Mhamdi et al. 2018); needs ``n >= 4f + 3``."""

    f: int
    name: str = "bulyan"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, _ = self._inputs(updates, weights, weighted=False)
        return bulyan(x, f=self.f)


@dataclass(slots=True)
class GeometricMedianRule(_Bucketed):
    """Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla et al. 2022)."""

    tol: float = 1e-6
    max_iter: int = 100
    eps: float = 1e-8
    weighted: bool = False
    name: str = "geometric_median"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, w = self._inputs(updates, weights, weighted=self.weighted)
        return geometric_median(
            x,
            weights=w if self.weighted else None,
            tol=self.tol,
            max_iter=self.max_iter,
            eps=self.eps,
        )


@dataclass(slots=True)
class ClippedMeanRule(_Bucketed):
    """Norm bounding (Sun et al. 2019): every update clipped to ``max_norm`` at the aggregator, then the mean.

    Server-side, so it binds members that skip their own client stages.
    """

    max_norm: float
    weighted: bool = True
    name: str = "clipped_mean"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        x, w = self._inputs(updates, weights, weighted=self.weighted)
        return clipped_mean(x, max_norm=self.max_norm, weights=w if self.weighted else None)


@dataclass(slots=True)
class CenteredClippingRule(_Bucketed):
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
        x, _ = self._inputs(updates, weights, weighted=False)
        d = int(np.shape(x)[1])
        start = self.center if self.center is not None and self.center.shape == (d,) else np.zeros(d)
        out = centered_clipping(x, tau=self.tau, center=start, iterations=self.iterations)
        self.center = out.copy()
        return out

    def state_dict(self) -> dict[str, npt.NDArray[Any]]:
        """The aggregation counter, and the center once there is one."""
        state = _Bucketed.state_dict(self)
        if self.center is not None:
            state["center"] = self.center.copy()
        return state

    def load_state_dict(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        _Bucketed.load_state_dict(self, state)
        if "center" not in state:
            self.center = None
            return
        center = np.asarray(state["center"], dtype=np.float64)
        if center.ndim != 1 or not np.isfinite(center).all():
            raise ConfigurationError(
                f"state of rule 'centered_clipping': center must be a finite 1-D array, got {center.shape}"
            )
        self.center = center.copy()

    def _state_keys(self) -> frozenset[str]:
        return frozenset({"aggregations", "center"})


@dataclass(slots=True)
class FLTrustRule(_Bucketed):
    """FLTrust (Cao et al. 2021): trust from the cosine with the aggregator's root-data update.

    ``root_size`` is the number of root examples the robustness extension samples for the aggregator.
    Raises :class:`~fedswarm.core.errors.ConfigurationError` when the round's server update was not
    computed (the rule was used outside a run that built the robustness extension).
    """

    root_size: int = 100
    name: str = "fltrust"
    needs_individual_updates: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        server_update = take_server_update(int(np.shape(updates)[1]))
        x, _ = self._inputs(updates, weights, weighted=False)
        return fltrust(x, server_update=server_update)

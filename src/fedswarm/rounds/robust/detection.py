"""Per-update anomaly scores against a robust reference, and a per-member reputation over rounds.

Every round whose updates the aggregator sees is scored, whatever the aggregation rule (the plain mean
included), against the **coordinate-wise median** of the round's updates (Yin et al. 2018), which fewer
than half of the updates cannot drag arbitrarily far. For update ``u_i`` with reference ``r``:

* ``distance`` ``|u_i - r|``, and ``distance_ratio``: the distance over the round's median distance;
* ``cosine`` ``<u_i, r> / (|u_i| |r|)`` (undefined, reported as ``None``, when either norm is 0), and
  ``cosine_z``, its robust z-score among the round's cosines;
* ``norm_z``, the robust z-score of ``|u_i|`` among the round's norms, and ``norm_ratio``, the norm over
  the round's median norm.

Above ``max_coordinates`` parameters (default 100,000) the scores are computed on that many coordinates
drawn at random each round (seeded by the round), with norms and distances scaled by ``sqrt(d / k)`` to
estimate the full ones: cosines and ratios are estimated without bias in the scale, and the cost of
scoring stays bounded (the coordinate-wise median of 100 updates of 10^6 parameters costs about as much
as the median rule itself).

A robust z-score is ``(v - median) / (1.4826 * MAD)`` (median absolute deviation, scaled to estimate a
normal standard deviation), so the attackers' own outsized values barely move the scale they are measured
against; a zero MAD falls back to ``1.2533 *`` the mean absolute deviation, and to 0 when all values agree.

An update is **flagged** when

* its norm is exactly 0 (it returns the global model unchanged: free-riding);
* ``norm_ratio > norm_ratio`` (default 5: scaling, model replacement, noise);
* ``distance_ratio > distance_ratio`` (default 6);
* its cosine is below ``cosine`` (default -0.1) *and* ``cosine_z < -cosine_z`` (default 4): it points away
  from the robust direction much more than the honest spread explains (sign flipping, IPM).

Ratios rather than z-scores decide on norms and distances because z-scores over a handful of updates, or
over the heavy-tailed norms of non-IID members, flag honest members; the cosine needs both conditions for
the same reason (under strong label skew honest cosines spread down to about -0.5). The thresholds were
set on clean and attacked runs of the bundled examples and of ``benchmarks/robustness.py`` (docs/robustness.md).

**Reputation.** Each member starts at 1. Every time one of its updates is scored,
``reputation <- (1 - decay) * reputation + decay * s`` with ``s = 0`` if flagged, else 1: an exponential
moving average over the rounds it took part in. A member is reported as flagged by the run when its
reputation is below ``threshold`` (with the defaults 0.3 and 0.5: flagged in two consecutive rounds it
took part in), so a single false alarm does not name a member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation import median
from fedswarm.core.errors import ConfigurationError

__all__ = ["AnomalyScores", "Detector", "DetectorSettings", "anomaly_scores", "robust_z"]

Vector = npt.NDArray[np.float64]

_MAD_TO_SIGMA = 1.4826
_MEAN_AD_TO_SIGMA = 1.2533


def robust_z(values: npt.ArrayLike) -> Vector:
    """Robust z-scores ``(v - median) / (1.4826 * MAD)`` of a 1-D array (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    center = float(np.median(v))
    deviation = np.abs(v - center)
    scale = _MAD_TO_SIGMA * float(np.median(deviation))
    if scale == 0.0:
        scale = _MEAN_AD_TO_SIGMA * float(deviation.mean())
    if scale == 0.0:
        return np.zeros_like(v)
    return np.asarray((v - center) / scale, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class AnomalyScores:
    """Scores of the n updates of a round (arrays of length n; cosine NaN where undefined)."""

    reference: Vector
    """The coordinate-wise median (of the sampled coordinates when ``columns`` is set)."""
    columns: npt.NDArray[np.int64] | None
    norm: Vector
    norm_z: Vector
    norm_ratio: Vector
    distance: Vector
    distance_ratio: Vector
    cosine: Vector
    cosine_z: Vector


def anomaly_scores(
    updates: npt.NDArray[Any],
    *,
    reference: npt.ArrayLike | None = None,
    max_coordinates: int = 0,
    seed: int = 0,
) -> AnomalyScores:
    """Score every row of the (n, d) ``updates`` against ``reference`` (default: the coordinate-wise median).

    With ``0 < max_coordinates < d``, only ``max_coordinates`` coordinates drawn with ``seed`` are used (a
    given ``reference`` is then of length d and sampled too), and norms and distances are scaled by
    ``sqrt(d / max_coordinates)``.

    Returns
    -------
    AnomalyScores
        Norms, distances, cosines, their ratios to the round's medians and robust z-scores.
    """
    u = np.asarray(updates, dtype=np.float64)
    d = u.shape[1]
    columns = None
    scale = 1.0
    if 0 < max_coordinates < d:
        rng = np.random.default_rng([seed, 0x5C0E])
        columns = np.sort(rng.choice(d, size=max_coordinates, replace=False)).astype(np.int64)
        u = u[:, columns]
        scale = float(np.sqrt(d / max_coordinates))
    if reference is None:
        ref = median(u)
    else:
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref[columns] if columns is not None else ref
    norms = np.linalg.norm(u, axis=1) * scale
    distance = np.linalg.norm(u - ref, axis=1) * scale
    ref_norm_scaled = float(np.linalg.norm(ref)) * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        dots = (u @ ref) * scale * scale
        cosine = np.where((norms > 0) & (ref_norm_scaled > 0), dots / (norms * ref_norm_scaled), np.nan)
    cosine = np.clip(cosine, -1.0, 1.0)
    finite = np.isfinite(cosine)
    cosine_z = np.full(len(cosine), np.nan)
    cosine_z[finite] = robust_z(cosine[finite])
    return AnomalyScores(
        reference=ref,
        columns=columns,
        norm=norms,
        norm_z=robust_z(norms),
        norm_ratio=_ratio(norms),
        distance=distance,
        distance_ratio=_ratio(distance),
        cosine=cosine,
        cosine_z=cosine_z,
    )


def _ratio(values: Vector) -> Vector:
    """``values`` over their median (0 where the median is 0 and the value too; inf above a zero median)."""
    center = float(np.median(values)) if values.size else 0.0
    if center > 0:
        return np.asarray(values / center, dtype=np.float64)
    return np.where(values > 0, np.inf, 0.0)


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Thresholds and the reputation average (the ``[robustness.detection]`` section)."""

    norm_ratio: float = 5.0
    distance_ratio: float = 6.0
    cosine: float = -0.1
    cosine_z: float = 4.0
    decay: float = 0.3
    threshold: float = 0.5
    min_updates: int = 4
    max_coordinates: int = 100_000


def _reasons(s: AnomalyScores, i: int, settings: DetectorSettings) -> list[str]:
    out: list[str] = []
    if s.norm[i] == 0.0:
        out.append("zero update: it returns the global model unchanged")
        return out
    if s.norm_ratio[i] > settings.norm_ratio:
        out.append(f"norm {s.norm[i]:.4g} is {s.norm_ratio[i]:.1f}x the median norm")
    if s.distance_ratio[i] > settings.distance_ratio:
        out.append(f"distance to the coordinate-wise median is {s.distance_ratio[i]:.1f}x the median distance")
    if np.isfinite(s.cosine[i]) and s.cosine[i] < settings.cosine and s.cosine_z[i] < -settings.cosine_z:
        out.append(
            f"cosine {s.cosine[i]:.3f} to the coordinate-wise median ({-s.cosine_z[i]:.1f} robust deviations "
            "below the round's cosines)"
        )
    return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


class Detector:
    """Scores each round, keeps every member's reputation, and names the members it flags."""

    def __init__(self, settings: DetectorSettings, *, member_name: Callable[[int], str]) -> None:
        self.settings = settings
        self.member_name = member_name
        self.reputation: dict[int, float] = {}
        self.flag_counts: dict[int, int] = {}
        self.rounds_scored = 0
        self.anomalies = 0

    def score_round(self, rnd: int, members: Sequence[int], updates: npt.NDArray[Any]) -> list[dict[str, Any]]:
        """Score one round's updates (row i from ``members[i]``); return the flagged ones as anomaly records.

        Each record is ``{"member", "round", "distance", "cosine", "norm_z", "norm_ratio", "distance_ratio",
        "cosine_z", "reputation", "flagged", "reason"}`` (``member`` is the member's name, ``reputation`` the value after this round).
        Rounds with fewer than ``min_updates`` updates are not scored (an empty list).
        """
        if len(members) < self.settings.min_updates:
            return []
        scores = anomaly_scores(updates, max_coordinates=self.settings.max_coordinates, seed=int(rnd))
        self.rounds_scored += 1
        decay = self.settings.decay
        out: list[dict[str, Any]] = []
        for i, member in enumerate(members):
            m = int(member)
            reasons = _reasons(scores, i, self.settings)
            flagged = bool(reasons)
            rep = (1.0 - decay) * self.reputation.get(m, 1.0) + decay * (0.0 if flagged else 1.0)
            self.reputation[m] = rep
            if not flagged:
                continue
            self.flag_counts[m] = self.flag_counts.get(m, 0) + 1
            self.anomalies += 1
            out.append(
                {
                    "member": self.member_name(m),
                    "round": int(rnd),
                    "distance": float(scores.distance[i]),
                    "cosine": _finite_or_none(float(scores.cosine[i])),
                    "norm_z": float(scores.norm_z[i]),
                    "norm_ratio": _finite_or_none(float(scores.norm_ratio[i])),
                    "distance_ratio": _finite_or_none(float(scores.distance_ratio[i])),
                    "cosine_z": _finite_or_none(float(scores.cosine_z[i])),
                    "reputation": rep,
                    "flagged": True,
                    "reason": "; ".join(reasons),
                }
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Reputations, flag counts and totals as JSON values (member ids as decimal strings)."""
        return {
            "reputation": {str(m): r for m, r in sorted(self.reputation.items())},
            "flag_counts": {str(m): c for m, c in sorted(self.flag_counts.items())},
            "rounds_scored": self.rounds_scored,
            "anomalies": self.anomalies,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises
        ------
        ConfigurationError
            A missing or malformed entry.
        """
        try:
            reputation = {int(m): float(r) for m, r in state["reputation"].items()}
            counts = {int(m): int(c) for m, c in state["flag_counts"].items()}
            rounds, anomalies = int(state["rounds_scored"]), int(state["anomalies"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigurationError(f"detection state: malformed ({type(exc).__name__}: {exc})") from None
        self.reputation, self.flag_counts = reputation, counts
        self.rounds_scored, self.anomalies = rounds, anomalies

    def flagged(self) -> list[str]:
        """Names of the members whose reputation is below the threshold, sorted."""
        bad = sorted(m for m, r in self.reputation.items() if r < self.settings.threshold)
        return [self.member_name(m) for m in bad]

    def summary(self, *, top: int = 100) -> dict[str, Any]:
        """``flagged`` (names) and a ``detection`` block: rounds scored, anomalies, lowest reputations."""
        lowest = sorted((r, m) for m, r in self.reputation.items() if r < 1.0)[:top]
        return {
            "flagged": self.flagged(),
            "detection": {
                "rounds_scored": self.rounds_scored,
                "anomalies": self.anomalies,
                "reputation": {self.member_name(m): round(r, 6) for r, m in lowest},
                "times_flagged": {
                    self.member_name(m): self.flag_counts[m] for _r, m in lowest if m in self.flag_counts
                },
            },
        }

"""The aggregator's side of client-level DP: what members are told to do, and how a sum is released.

One :class:`SumRelease` lives at the aggregator for the whole run. Every round it

1. tells members what to do before their vector leaves (:meth:`SumRelease.member_privacy`: clip to the
   round's ``C``, add a distributed noise share, append the unclipped bit for adaptive clipping);
2. bounds the per-coordinate range of what they send (:meth:`SumRelease.value_range`, for SecAgg+'s
   fixed-point quantization);
3. turns the sum of what arrived into ``(total, count)`` for the coordinator, which then applies the
   strategy's server update to ``total / count`` (:meth:`SumRelease.release`).

Without DP (``mode`` ``"none"`` or ``"local"``) the release is the plain sum over the ``k``
contributors (``count = k``, every contributor weighs the same). With client-level DP it is the noised
sum over the public cohort size ``m`` (``count = m``; see :mod:`fedswarm.privacy.dp.stages` for the
derivation): ``"central"`` adds ``N(0, (z C)^2)`` here (:class:`CentralGaussianNoise`, or, under CKKS,
encrypted and added before decryption via :meth:`SumRelease.central_noise`); ``"distributed"`` finds
the noise already in the sum and refuses a sum of fewer than ``min_survivors`` contributors. Adaptive
clipping reads the noised unclipped count from the trailing coordinate and updates ``C``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, RoundAborted
from fedswarm.privacy.dp.adaptive import AdaptiveClipper
from fedswarm.privacy.dp.config import DPMode
from fedswarm.privacy.dp.mechanisms import check_survivors, distributed_noise_std, secure_generator
from fedswarm.privacy.dp.stages import CentralGaussianNoise, count_share_std
from fedswarm.rounds.privacy.messages import MemberPrivacy

__all__ = ["NOISE_MARGIN_STDS", "SumRelease"]

Vector = npt.NDArray[np.float64]

NOISE_MARGIN_STDS = 8.0
"""Quantization range margin for distributed noise shares, in standard deviations (saturation ~1e-15)."""


class SumRelease:
    """Aggregator-side DP state of a run (see the module docstring).

    Parameters
    ----------
    mode
        ``"none"``, ``"central"``, ``"distributed"`` or ``"local"``.
    clip
        Client-level clip ``C`` (the initial one with adaptive clipping); ignored without client-level DP.
    update_noise_multiplier
        Multiplier of the noise on the update sum (``z``, or ``z_Delta`` with adaptive clipping).
    adaptive
        The adaptive clipper, or ``None`` for a fixed clip.
    min_survivors
        ``dp = "distributed"``: the fewest contributors a released sum may have.
    """

    def __init__(
        self,
        *,
        mode: DPMode,
        clip: float = 0.0,
        update_noise_multiplier: float = 0.0,
        adaptive: AdaptiveClipper | None = None,
        min_survivors: int = 1,
    ) -> None:
        self.mode: DPMode = mode
        self.client_level = mode in ("central", "distributed")
        if self.client_level and not (math.isfinite(clip) and clip > 0 and update_noise_multiplier > 0):
            raise ConfigurationError(f"privacy: dp = {mode!r} needs a positive clip and noise multiplier")
        self._clip = float(clip)
        self.update_noise_multiplier = float(update_noise_multiplier)
        self.adaptive = adaptive if self.client_level else None
        self.min_survivors = int(min_survivors)
        self.last_noised_count: float | None = None

    @property
    def clip(self) -> float:
        """This round's client-level clip ``C``."""
        return self.adaptive.clip if self.adaptive is not None else self._clip

    @property
    def extra(self) -> int:
        """Coordinates members append to their update (1: the unclipped bit of adaptive clipping)."""
        return 1 if self.adaptive is not None else 0

    def _update_share_std(self) -> float:
        return distributed_noise_std(
            noise_multiplier=self.update_noise_multiplier, clip=self.clip, min_survivors=self.min_survivors
        )

    def _count_share_std(self) -> float:
        assert self.adaptive is not None
        return count_share_std(
            count_noise_multiplier=self.adaptive.count_noise_multiplier, min_survivors=self.min_survivors
        )

    def member_privacy(self) -> MemberPrivacy:
        """What every member does to its update this round."""
        if not self.client_level:
            return MemberPrivacy(clip=0.0, update_noise_std=0.0, count_noise_std=0.0, report_unclipped=False)
        distributed = self.mode == "distributed"
        return MemberPrivacy(
            clip=self.clip,
            update_noise_std=self._update_share_std() if distributed else 0.0,
            count_noise_std=self._count_share_std() if distributed and self.adaptive is not None else 0.0,
            report_unclipped=self.adaptive is not None,
        )

    def value_range(self) -> float | None:
        """Bound on ``|coordinate|`` of what members send this round (``None``: not known, ask the spec)."""
        if not self.client_level:
            return None
        bound = self.clip
        if self.mode == "distributed":
            bound += NOISE_MARGIN_STDS * self._update_share_std()
        if self.adaptive is not None:
            count = 1.0 + (NOISE_MARGIN_STDS * self._count_share_std() if self.mode == "distributed" else 0.0)
            bound = max(bound, count)
        return bound

    def _central(self, cohort: int) -> CentralGaussianNoise:
        return CentralGaussianNoise(
            noise_multiplier=self.update_noise_multiplier, clip=self.clip, expected_count=cohort
        )

    def central_noise(self, length: int, *, cohort: int) -> Vector | None:
        """``dp = "central"``: the noise to add to a sum of ``length`` coordinates (else ``None``)."""
        if self.mode != "central":
            return None
        count_std = self.adaptive.count_noise_multiplier if self.adaptive is not None else 0.0
        return self._central(cohort).sum_noise(length, count_noise_std=count_std)

    def check_contributors(self, contributors: int) -> None:
        """``dp = "distributed"``: refuse to release a sum with fewer than ``min_survivors`` noise shares.

        Raises
        ------
        RoundAborted
            Too few contributors.
        """
        if self.mode == "distributed":
            check_survivors(contributors, min_survivors=self.min_survivors)

    def release(
        self, summed: npt.NDArray[Any], *, dimension: int, contributors: int, cohort: int, noise_added: bool
    ) -> tuple[Vector, int]:
        """Turn the sum of ``contributors`` members' vectors into ``(total, count)`` for the coordinator.

        ``noise_added``: the central noise is already in ``summed`` (added under encryption).
        """
        s = np.asarray(summed, dtype=np.float64)
        if s.shape != (dimension + self.extra,):
            raise RoundAborted(f"privacy: summed vector has shape {list(s.shape)}, expected [{dimension + self.extra}]")
        if not self.client_level:
            return s[:dimension].copy(), contributors
        self.check_contributors(contributors)
        update = s[:dimension]
        count = float(s[dimension]) if self.adaptive is not None else 0.0
        if self.mode == "central" and not noise_added:
            stage = self._central(cohort)
            update = stage.after_aggregate(update / cohort, ctx=None) * cohort
            if self.adaptive is not None:
                count += float(secure_generator().normal(0.0, self.adaptive.count_noise_multiplier))
        if self.adaptive is not None:
            self.last_noised_count = count
            self.adaptive.observe_noised_count(count, expected_count=cohort)
        return np.array(update, dtype=np.float64), cohort

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "clip": self.clip}
        if self.adaptive is not None:
            out["adaptive"] = self.adaptive.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the adaptive clip; a fixed clip must be this release's).

        Raises
        ------
        ConfigurationError
            Another mode or fixed clip, or an adaptive state that does not fit this release.
        """
        if state.get("mode") != self.mode:
            raise ConfigurationError(f"privacy release state: mode {state.get('mode')!r}, this run uses {self.mode!r}")
        if self.adaptive is not None:
            adaptive = state.get("adaptive")
            if not isinstance(adaptive, dict):
                raise ConfigurationError("privacy release state: no adaptive clip state")
            self.adaptive.load_state_dict(adaptive)
        elif self.client_level and state.get("clip") != self.clip:
            raise ConfigurationError(f"privacy release state: clip {state.get('clip')!r}, this run uses {self.clip!r}")

"""Sample-level accounting of DP-SGD run by every member on its own records (``dp = "local"``).

Each member trains with DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang 2016, "Deep
Learning with Differential Privacy"): every step samples each of its ``n`` records independently with
probability ``q = min(1, B / n)`` (Poisson sampling, ``B`` the batch size), clips each per-example
gradient to ``C`` and adds ``N(0, (z C)^2)`` to their sum. One round of local training is
``E * ceil(n / B)`` such steps (``E`` epochs). A member that took part in ``p`` rounds has run the
Poisson-sampled Gaussian ``p E ceil(n / B)`` times, which ``dp_accounting`` turns into epsilon under
add/remove-one-record neighbours.

The federation's guarantee is the worst member's: every record of every member is protected with the
reported ``(epsilon, delta)``, where epsilon is the largest over members of their own epsilon. Members
that were sampled but dropped out count as having trained (their update may have left before the
drop), so the report never under-counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.accounting import PLD_DISCRETIZATION, AccountantKind

__all__ = ["SampleLevelBudget", "calibrate_dpsgd_noise", "dpsgd_epsilon", "dpsgd_schedule", "worst_case_records"]

_CALIBRATION_RTOL = 1e-3
_MAX_Z = 1e4


def dpsgd_schedule(*, records: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(q, steps)``: the Poisson sampling rate and the DP-SGD steps of one round of local training."""
    if records < 1 or batch_size < 1 or epochs < 1:
        raise ConfigurationError(
            f"DP-SGD needs records, batch_size and epochs >= 1, got {records}, {batch_size}, {epochs}"
        )
    return min(1.0, batch_size / records), epochs * math.ceil(records / batch_size)


@lru_cache(maxsize=4096)
def _epsilon(accountant: str, q: float, steps: int, z: float, delta: float) -> float:
    if steps == 0:
        return 0.0
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps
    )
    relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    acc: dp_accounting.PrivacyAccountant
    if accountant == "rdp":
        acc = rdp.RdpAccountant(neighboring_relation=relation)
    else:
        acc = pld.PLDAccountant(neighboring_relation=relation, value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def dpsgd_epsilon(
    *,
    accountant: AccountantKind,
    records: int,
    batch_size: int,
    epochs: int,
    participations: int,
    noise_multiplier: float,
    delta: float,
) -> float:
    """Epsilon of one member with ``records`` records after ``participations`` rounds of DP-SGD."""
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z > 0):
        raise ConfigurationError(f"privacy.noise_multiplier must be finite and > 0, got {noise_multiplier!r}")
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"privacy.delta must be in (0, 1), got {delta!r}")
    q, steps = dpsgd_schedule(records=records, batch_size=batch_size, epochs=epochs)
    return _epsilon(accountant, q, steps * int(participations), z, float(delta))


def worst_case_records(records: Sequence[int], *, batch_size: int) -> list[int]:
    """The record counts whose epsilon can be the largest: the smallest count of every group of members
    with the same number of steps per round, ``ceil(n / B)``.

    Within such a group every member runs the same number of steps, and a member with more records is
    sampled at a lower rate ``B / n``; the subsampled Gaussian's epsilon grows with the rate, so the
    smallest member of the group is its worst case.
    """
    smallest: dict[int, int] = {}
    for r in records:
        block = math.ceil(int(r) / batch_size)
        smallest[block] = min(int(r), smallest.get(block, int(r)))
    return sorted(smallest.values())


def _worst(
    record_counts: Sequence[int], *, participations: int, z: float, accountant: AccountantKind, **kw: Any
) -> float:
    return max(
        dpsgd_epsilon(accountant=accountant, records=r, participations=participations, noise_multiplier=z, **kw)
        for r in record_counts
    )


def calibrate_dpsgd_noise(
    *,
    target_epsilon: float,
    delta: float,
    records: Sequence[int],
    batch_size: int,
    epochs: int,
    rounds: int,
    accountant: AccountantKind,
) -> float:
    """Smallest noise multiplier (within 0.1%) such that no member exceeds ``target_epsilon`` after
    taking part in all ``rounds`` rounds (the worst case of any sampling).

    The bisection runs on the smallest record count (the usual worst case) and the result is then checked
    against every group's worst case (:func:`worst_case_records`), raising ``z`` until all are within
    the target.

    Raises
    ------
    ConfigurationError
        Invalid settings, or a target that needs a multiplier above 1e4.
    """
    target = float(target_epsilon)
    if not (math.isfinite(target) and target > 0):
        raise ConfigurationError(f"privacy.target_epsilon must be finite and > 0, got {target_epsilon!r}")
    if not records:
        raise ConfigurationError("DP-SGD calibration needs at least one member's record count")
    distinct = worst_case_records(records, batch_size=batch_size)
    probe = distinct[:1]
    kw: dict[str, Any] = {"batch_size": batch_size, "epochs": epochs, "delta": delta}

    def eps(z: float, counts: Sequence[int]) -> float:
        return _worst(counts, participations=rounds, z=z, accountant=accountant, **kw)

    hi = 1.0
    if eps(hi, probe) > target:
        lo = hi
        while True:
            hi = lo * 2.0
            if hi > _MAX_Z:
                raise ConfigurationError(
                    f"privacy.target_epsilon: {target} is unreachable with DP-SGD over {rounds} rounds "
                    f"(batch_size {batch_size}, {epochs} epoch(s)) even with noise_multiplier {_MAX_Z:g}"
                )
            if eps(hi, probe) <= target:
                break
            lo = hi
    else:
        while True:
            lo = hi / 2.0
            if lo < 1e-2 or eps(lo, probe) > target:
                break
            hi = lo
    # Invariant: eps(hi) <= target, and eps(lo) > target unless lo fell below 1e-2.
    while hi - lo > _CALIBRATION_RTOL * hi:
        mid = 0.5 * (lo + hi)
        if eps(mid, probe) <= target:
            hi = mid
        else:
            lo = mid
    while eps(hi, distinct) > target:
        hi *= 1.0 + 4 * _CALIBRATION_RTOL
        if hi > _MAX_Z:  # pragma: no cover - the probe already bounds this
            raise ConfigurationError(f"privacy.target_epsilon: {target} is unreachable with DP-SGD")
    return hi


class SampleLevelBudget:
    """Per-member participation counts, the worst member's epsilon, and the budget stop.

    Parameters
    ----------
    accountant
        ``"rdp"`` or ``"pld"``.
    records
        Training records of every member, indexed by member id.
    batch_size, epochs
        The local DP-SGD schedule of one round.
    noise_multiplier, delta
        DP-SGD's ``z`` and the target delta.
    budget_epsilon
        Stop before a round after which some member could exceed it; ``None`` never stops.
    planned_rounds
        The run's number of rounds.
    """

    def __init__(
        self,
        *,
        accountant: AccountantKind,
        records: Sequence[int],
        batch_size: int,
        epochs: int,
        noise_multiplier: float,
        delta: float,
        budget_epsilon: float | None,
        planned_rounds: int,
    ) -> None:
        self.accountant: AccountantKind = accountant
        self.records = np.asarray(records, dtype=np.int64)
        if self.records.ndim != 1 or len(self.records) == 0 or int(self.records.min()) < 1:
            raise ConfigurationError("dp = 'local' needs at least one training record at every member")
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.noise_multiplier = float(noise_multiplier)
        self.delta = float(delta)
        self.budget_epsilon = budget_epsilon
        self.planned_rounds = int(planned_rounds)
        self.participations = np.zeros(len(self.records), dtype=np.int64)
        self.rounds = 0
        dpsgd_epsilon(
            accountant=accountant,
            records=int(self.records.min()),
            batch_size=self.batch_size,
            epochs=self.epochs,
            participations=0,
            noise_multiplier=self.noise_multiplier,
            delta=self.delta,
        )

    def _eps(self, records: int, participations: int) -> float:
        return dpsgd_epsilon(
            accountant=self.accountant,
            records=records,
            batch_size=self.batch_size,
            epochs=self.epochs,
            participations=participations,
            noise_multiplier=self.noise_multiplier,
            delta=self.delta,
        )

    def _worst_pairs(self, extra: int) -> set[tuple[int, int]]:
        """Per number of participations, the worst-case record counts (see :func:`worst_case_records`)."""
        by_count: dict[int, list[int]] = {}
        for r, p in zip(self.records.tolist(), self.participations.tolist(), strict=True):
            if p + extra > 0:
                by_count.setdefault(p + extra, []).append(r)
        return {(r, p) for p, rs in by_count.items() for r in worst_case_records(rs, batch_size=self.batch_size)}

    def epsilon(self) -> float:
        """The largest epsilon any member has spent so far."""
        return max((self._eps(r, p) for r, p in self._worst_pairs(0)), default=0.0)

    def _next_worst(self) -> float:
        return max(self._eps(r, p) for r, p in self._worst_pairs(1))

    def check_first_round(self) -> None:
        """Refuse a budget that one round of DP-SGD exceeds for some member.

        Raises
        ------
        ConfigurationError
            Naming ``privacy.budget_epsilon``.
        """
        if self.budget_epsilon is not None and self.rounds == 0:
            one = self._next_worst()
            if one > self.budget_epsilon:
                raise ConfigurationError(
                    f"privacy.budget_epsilon: {self.budget_epsilon} is below the epsilon of a single round of "
                    f"DP-SGD for the smallest members ({one:.4g}); no round could run"
                )

    def record_round(self, participants: Sequence[int] = ()) -> dict[str, Any]:
        """Count one round of DP-SGD for ``participants``; return the annotation."""
        ids = np.asarray(list(participants), dtype=np.int64)
        if len(ids):
            self.participations[ids] += 1
        self.rounds += 1
        return self.report()

    def report(self) -> dict[str, Any]:
        """The worst member's epsilon so far, as JSON-compatible values."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "accountant": self.accountant,
            "sampling": "poisson_records",
            "noise_multiplier": self.noise_multiplier,
            "rounds": self.rounds,
            "level": "sample",
        }

    def stop_reason(self) -> str | None:
        """Why the run must stop before the next round, or ``None``."""
        if self.budget_epsilon is None or self.rounds >= self.planned_rounds:
            return None
        nxt = self._next_worst()
        if nxt > self.budget_epsilon:
            return (
                f"privacy budget exhausted: another round could take a member to epsilon {nxt:.4g} "
                f"> privacy.budget_epsilon {self.budget_epsilon:g} (spent {self.epsilon():.4g})"
            )
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "participations": self.participations.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parts = np.asarray(state["participations"], dtype=np.int64)
        if parts.shape != self.participations.shape or (parts < 0).any():
            raise ConfigurationError("sample-level budget state: participations do not match the members")
        self.participations = parts
        self.rounds = int(state["rounds"])

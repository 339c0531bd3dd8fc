"""The privacy budget of a run with client-level DP: epsilon after every round, and when to stop.

:class:`ClientLevelBudget` is thin state around :class:`~fedswarm.privacy.dp.accounting.PrivacyAccountant`
for the sampling the round engine actually does:

* a cohort of ``m < N`` members drawn without replacement every round (what
  :func:`fedswarm.strategy.base.sample_members` does) is accounted as ``"fixed_size"`` sampling
  (replace-one neighbours, sensitivity ``2 C``);
* every member in every round (``m = N``) is the Gaussian mechanism without sampling under add/remove-one
  neighbours (sensitivity ``C``): accounted as ``"poisson"`` with rate 1 and reported as ``"full"``.

Stopping: :meth:`ClientLevelBudget.stop_reason` is asked after each round whether the *next* round would
take epsilon above ``budget_epsilon``; the run stops before running it. A budget that even the first
round exceeds is refused up front (:meth:`ClientLevelBudget.check_first_round`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.accounting import AccountantKind, PrivacyAccountant, SamplingKind, compute_epsilon

__all__ = ["ClientLevelBudget", "ReportedSampling", "client_sampling"]

ReportedSampling = Literal["fixed_size", "full"]


def _epsilon_after(acc: PrivacyAccountant, rounds: int) -> float:
    return compute_epsilon(
        accountant=acc.accountant,
        sampling=acc.sampling,
        population=acc.population,
        sample_size=acc.sample_size,
        noise_multiplier=acc.noise_multiplier,
        delta=acc.delta,
        rounds=rounds,
    )


def client_sampling(*, population: int, cohort: int) -> tuple[SamplingKind, ReportedSampling]:
    """The accounting and the reported name of the sampling of ``cohort`` of ``population`` members."""
    if not 1 <= cohort <= population:
        raise ConfigurationError(f"cohort {cohort} must be in 1..{population} (the number of members)")
    if cohort == population:
        return "poisson", "full"
    return "fixed_size", "fixed_size"


class ClientLevelBudget:
    """Epsilon spent by client-level DP so far, per-round annotations and the budget stop.

    Parameters
    ----------
    accountant
        ``"rdp"`` or ``"pld"``.
    population, cohort
        Members of the federation and members sampled per round.
    noise_multiplier
        The *accounted* multiplier ``z`` (with adaptive clipping, not the larger one on the update).
    delta
        Target delta.
    budget_epsilon
        Stop before a round that would exceed it; ``None`` never stops.
    planned_rounds
        The run's number of rounds (no stop is requested after the last one).
    """

    def __init__(
        self,
        *,
        accountant: AccountantKind,
        population: int,
        cohort: int,
        noise_multiplier: float,
        delta: float,
        budget_epsilon: float | None,
        planned_rounds: int,
    ) -> None:
        sampling, self.reported_sampling = client_sampling(population=population, cohort=cohort)
        self._accountant = PrivacyAccountant(
            accountant=accountant,
            sampling=sampling,
            population=population,
            sample_size=cohort,
            noise_multiplier=noise_multiplier,
            delta=delta,
        )
        if budget_epsilon is not None and not (math.isfinite(budget_epsilon) and budget_epsilon > 0):
            raise ConfigurationError(f"privacy.budget_epsilon must be finite and > 0, got {budget_epsilon!r}")
        self.budget_epsilon = budget_epsilon
        self.planned_rounds = int(planned_rounds)

    @property
    def accountant(self) -> PrivacyAccountant:
        return self._accountant

    def check_first_round(self) -> None:
        """Refuse a budget that a single round exceeds.

        Raises
        ------
        ConfigurationError
            Naming ``privacy.budget_epsilon`` and the epsilon of one round.
        """
        budget = self.budget_epsilon
        if budget is not None and self._accountant.rounds == 0 and self._accountant.would_exceed(budget, rounds=1):
            one = _epsilon_after(self._accountant, 1)
            raise ConfigurationError(
                f"privacy.budget_epsilon: {budget} is below the epsilon of a single round "
                f"({one:.4g} with noise_multiplier {self._accountant.noise_multiplier:.4g}); no round could run"
            )

    def record_round(self, participants: Sequence[int] = ()) -> dict[str, Any]:
        """Account for one more round; return the annotation ``{epsilon, delta, accountant, ...}``."""
        self._accountant.step()
        return self.report()

    def report(self) -> dict[str, Any]:
        """What has been spent so far, as JSON-compatible values."""
        acc = self._accountant
        return {
            "epsilon": acc.epsilon(),
            "delta": acc.delta,
            "accountant": acc.accountant,
            "sampling": self.reported_sampling,
            "noise_multiplier": acc.noise_multiplier,
            "rounds": acc.rounds,
            "level": "client",
        }

    def stop_reason(self) -> str | None:
        """Why the run must stop before the next round, or ``None``."""
        if self.budget_epsilon is None or self._accountant.rounds >= self.planned_rounds:
            return None
        if self._accountant.would_exceed(self.budget_epsilon, rounds=1):
            nxt = _epsilon_after(self._accountant, self._accountant.rounds + 1)
            return (
                f"privacy budget exhausted: round {self._accountant.rounds + 1} would spend epsilon {nxt:.4g} "
                f"> privacy.budget_epsilon {self.budget_epsilon:g} (spent {self._accountant.epsilon():.4g})"
            )
        return None

    def state_dict(self) -> dict[str, Any]:
        return self._accountant.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._accountant.load_state_dict(state)

"""Privacy accounting of client-level DP-FedAvg across rounds, with Google's ``dp_accounting`` package.

Each round samples members and releases the sum of their clipped updates (clip ``C``) plus Gaussian
noise of standard deviation ``z C`` (:mod:`.mechanisms`). Two ways of sampling are accounted for:

``"poisson"``
    Every one of the ``population`` members takes part independently with probability
    ``q = sample_size / population`` (``sample_size`` is the *expected* cohort). Neighbouring
    federations differ by adding or removing one member, the sensitivity of the sum is ``C``, and the
    event is ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` under ``ADD_OR_REMOVE_ONE``
    (Abadi et al. 2016; Mironov, Talwar and Zhang 2019).

``"fixed_size"``
    Exactly ``sample_size`` members are drawn without replacement each round (what
    :class:`fedswarm.strategy.base.Sampling` does). The population size is then public and neighbouring
    federations differ by *replacing* one member's data: the sum moves by up to ``2 C``, so the Gaussian
    has noise multiplier ``z / 2`` relative to its sensitivity. Forgetting this factor under-reports
    epsilon. Expect two to five times the Poisson epsilon for the same ``z`` (more at small ``z``, where
    the halved multiplier loses most of the amplification by sampling).

    * ``"rdp"``: ``SampledWithoutReplacementDpEvent(population, sample_size, GaussianDpEvent(z / 2))``
      under ``REPLACE_ONE``, the bound of Wang, Balle and Kasiviswanathan 2019 ("Subsampled Renyi
      Differential Privacy and Analytical Moments Accountant", Theorem 27).
    * ``"pld"``: ``dp_accounting``'s PLD accountant has no event for sampling without replacement. By the
      subsampling theorem of Dong, Roth and Su 2022 ("Gaussian Differential Privacy", Theorem 4.2) one
      round is ``min(f_p, f_p^-1)**``-DP, with ``f_p`` the trade-off function of the Poisson-subsampled
      Gaussian (rate ``p = sample_size / population``, multiplier ``z / 2``) in the remove direction and
      ``f_p^-1`` the add direction. Because the update vectors change from round to round, the worst
      pair of neighbours may alternate directions, so composing only the remove (or only the add) PLD
      would not be a proof. The composition ``f_p (x) f_p^-1`` of both directions is a trade-off function
      below both ``f_p`` and ``f_p^-1``, hence below their greatest convex minorant ``min(f_p, f_p^-1)**``;
      so this module composes, per round, the remove PLD *with* the add PLD (read from the two halves of
      ``dp_accounting``'s add/remove PLD of the Poisson-subsampled Gaussian). The result is a valid upper
      bound, somewhat looser than the tight one and usually well below the RDP bound.

Both accountants are upper bounds. PLD discretisation uses ``pessimistic_estimate`` rounding, so a
coarser interval only over-reports; :data:`PLD_DISCRETIZATION` (1e-3) keeps a few hundred rounds well
under a second and changes epsilon by about 1e-3 or less against the library default of 1e-4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from fedswarm.core.errors import ConfigurationError

__all__ = [
    "PLD_DISCRETIZATION",
    "AccountantKind",
    "PrivacyAccountant",
    "PrivacySpent",
    "SamplingKind",
    "compute_epsilon",
]

AccountantKind = Literal["rdp", "pld"]
SamplingKind = Literal["poisson", "fixed_size"]

PLD_DISCRETIZATION = 1e-3

_STATE_VERSION = 1


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_params(
    *,
    accountant: str,
    sampling: str,
    population: int,
    sample_size: int,
    noise_multiplier: float,
    delta: float,
) -> None:
    if accountant not in get_args(AccountantKind):
        raise ConfigurationError(f"accountant must be one of {get_args(AccountantKind)}, got {accountant!r}")
    if sampling not in get_args(SamplingKind):
        raise ConfigurationError(f"sampling must be one of {get_args(SamplingKind)}, got {sampling!r}")
    _check_int("population", population, minimum=1)
    _check_int("sample_size", sample_size, minimum=1)
    if sample_size > population:
        raise ConfigurationError(f"sample_size {sample_size} exceeds population {population}")
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z > 0.0):
        raise ConfigurationError(f"noise_multiplier must be finite and > 0, got {noise_multiplier!r}")
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta!r}")


def _fixed_size_pld_epsilon(*, rate: float, noise_multiplier: float, delta: float, rounds: int) -> float:
    """Epsilon of ``rounds`` rounds of fixed-size sampling by the remove-with-add composition (module doc)."""
    base = pld_lib.from_gaussian_mechanism(
        standard_deviation=noise_multiplier / 2.0,
        sampling_prob=rate,
        value_discretization_interval=PLD_DISCRETIZATION,
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    )
    if rate == 1.0:
        # No sampling: one symmetric Gaussian of sensitivity 2C, the same in both directions.
        step = base
    else:
        pmf_remove = getattr(base, "_pmf_remove", None)
        pmf_add = getattr(base, "_pmf_add", None)
        if pmf_remove is None or pmf_add is None:  # pragma: no cover - guards a dp_accounting upgrade
            raise ConfigurationError(
                "the installed dp_accounting does not expose the add/remove PLDs needed for "
                "accountant='pld' with sampling='fixed_size'; use accountant='rdp'"
            )
        step = pld_lib.PrivacyLossDistribution(pmf_remove).compose(pld_lib.PrivacyLossDistribution(pmf_add))
    return float(step.self_compose(rounds).get_epsilon_for_delta(delta))


def compute_epsilon(
    *,
    accountant: AccountantKind,
    sampling: SamplingKind,
    population: int,
    sample_size: int,
    noise_multiplier: float,
    delta: float,
    rounds: int,
    rdp_orders: Sequence[float] | None = None,
) -> float:
    """Epsilon spent by ``rounds`` rounds of the sampled Gaussian mechanism, at the given ``delta``.

    Parameters
    ----------
    accountant
        ``"rdp"`` (Renyi DP, fast, looser) or ``"pld"`` (privacy loss distributions, tighter).
    sampling
        ``"poisson"`` or ``"fixed_size"`` (see the module docstring for the neighbouring relations).
    population
        Number of members that can be sampled.
    sample_size
        Members per round (expected, for Poisson).
    noise_multiplier
        ``z``: standard deviation of the noise on the sum divided by the clip ``C``.
    delta
        Target delta, in (0, 1).
    rounds
        Number of rounds (>= 0).
    rdp_orders
        RDP orders to optimise over (``None``: ``dp_accounting``'s defaults); ignored by ``"pld"``.

    Raises
    ------
    ConfigurationError
        Invalid parameters.
    """
    _check_params(
        accountant=accountant,
        sampling=sampling,
        population=population,
        sample_size=sample_size,
        noise_multiplier=noise_multiplier,
        delta=delta,
    )
    rounds = _check_int("rounds", rounds, minimum=0)
    if rounds == 0:
        return 0.0
    population, sample_size, z, delta = int(population), int(sample_size), float(noise_multiplier), float(delta)
    rate = sample_size / population
    if accountant == "pld" and sampling == "fixed_size":
        return _fixed_size_pld_epsilon(rate=rate, noise_multiplier=z, delta=delta, rounds=rounds)
    event: dp_accounting.DpEvent
    if sampling == "poisson":
        relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(z))
    else:
        relation = dp_accounting.NeighboringRelation.REPLACE_ONE
        event = dp_accounting.SampledWithoutReplacementDpEvent(
            population, sample_size, dp_accounting.GaussianDpEvent(z / 2.0)
        )
    acc: dp_accounting.PrivacyAccountant
    if accountant == "rdp":
        orders = None if rdp_orders is None else [float(o) for o in rdp_orders]
        acc = rdp.RdpAccountant(orders=orders, neighboring_relation=relation)
    else:
        acc = pld.PLDAccountant(neighboring_relation=relation, value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(acc.get_epsilon(delta))


@dataclass(frozen=True, slots=True)
class PrivacySpent:
    """What a run has spent so far: ``(epsilon, delta)``-DP after ``rounds`` rounds."""

    epsilon: float
    delta: float
    accountant: AccountantKind
    sampling: SamplingKind
    noise_multiplier: float
    rounds: int


class PrivacyAccountant:
    """Counts rounds and reports the epsilon spent; thin state around :func:`compute_epsilon`.

    Every parameter is fixed for the run (a run whose noise or cohort changes needs a new analysis).
    With adaptive clipping, pass the *accounted* multiplier ``z`` (see :mod:`.adaptive`), not the larger
    one applied to the update.
    """

    def __init__(
        self,
        *,
        accountant: AccountantKind,
        sampling: SamplingKind,
        population: int,
        sample_size: int,
        noise_multiplier: float,
        delta: float,
    ) -> None:
        _check_params(
            accountant=accountant,
            sampling=sampling,
            population=population,
            sample_size=sample_size,
            noise_multiplier=noise_multiplier,
            delta=delta,
        )
        self.accountant: AccountantKind = accountant
        self.sampling: SamplingKind = sampling
        self.population = int(population)
        self.sample_size = int(sample_size)
        self.noise_multiplier = float(noise_multiplier)
        self.delta = float(delta)
        self._rounds = 0
        self._cache: dict[int, float] = {}

    @property
    def rounds(self) -> int:
        """Rounds accounted for so far."""
        return self._rounds

    def step(self, rounds: int = 1) -> None:
        """Record ``rounds`` more rounds (>= 1)."""
        self._rounds += _check_int("rounds", rounds, minimum=1)

    def _epsilon_after(self, rounds: int) -> float:
        if rounds not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[rounds] = compute_epsilon(
                accountant=self.accountant,
                sampling=self.sampling,
                population=self.population,
                sample_size=self.sample_size,
                noise_multiplier=self.noise_multiplier,
                delta=self.delta,
                rounds=rounds,
            )
        return self._cache[rounds]

    def epsilon(self) -> float:
        """Epsilon spent by the rounds recorded so far, at this accountant's delta."""
        return self._epsilon_after(self._rounds)

    def spent(self) -> PrivacySpent:
        """A report of the budget spent so far."""
        return PrivacySpent(
            epsilon=self.epsilon(),
            delta=self.delta,
            accountant=self.accountant,
            sampling=self.sampling,
            noise_multiplier=self.noise_multiplier,
            rounds=self._rounds,
        )

    def would_exceed(self, budget_epsilon: float, *, rounds: int = 1) -> bool:
        """Whether ``rounds`` more rounds would take epsilon above ``budget_epsilon``: check before a round.

        Raises
        ------
        ConfigurationError
            ``budget_epsilon`` is not positive or ``rounds`` < 1.
        """
        budget = float(budget_epsilon)
        if not budget > 0.0:
            raise ConfigurationError(f"budget_epsilon must be > 0, got {budget_epsilon!r}")
        extra = _check_int("rounds", rounds, minimum=1)
        return self._epsilon_after(self._rounds + extra) > budget

    def state_dict(self) -> dict[str, Any]:
        """The parameters and the round count, as plain JSON-compatible values."""
        return {
            "version": _STATE_VERSION,
            "accountant": self.accountant,
            "sampling": self.sampling,
            "population": self.population,
            "sample_size": self.sample_size,
            "noise_multiplier": self.noise_multiplier,
            "delta": self.delta,
            "rounds": self._rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the round count of a run with the same parameters.

        Raises
        ------
        ConfigurationError
            Unknown version, a parameter that differs from this accountant's, or an invalid round count.
        """
        if state.get("version") != _STATE_VERSION:
            raise ConfigurationError(f"privacy accountant state: unsupported version {state.get('version')!r}")
        mine = self.state_dict()
        for key in ("accountant", "sampling", "population", "sample_size", "noise_multiplier", "delta"):
            if state.get(key) != mine[key]:
                raise ConfigurationError(
                    f"privacy accountant state: {key} is {state.get(key)!r} but this run uses {mine[key]!r}"
                )
        self._rounds = _check_int("rounds", state.get("rounds"), minimum=0)

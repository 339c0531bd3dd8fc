"""The privacy run extension: one collector, its member handlers, and the privacy budget of the run.

Built from ``[privacy]`` by :func:`fedswarm.spec.privacy_extension.build_privacy_extension`. After
every round it writes ``outcome.annotations["privacy"]`` (recorded in ``metrics.jsonl`` and by run
observers such as the ledger): ``epsilon``, ``delta`` and ``accountant`` of what has been spent so far
(``None`` without differential privacy), plus the sampling, the round's clip and what secure
aggregation reported. It asks the run to stop when the next round would exceed ``budget_epsilon``, and
adds ``privacy: {epsilon, delta, accountant, ...}`` to the run summary. Its server state (the rounds the
accountant has spent, the adaptive clip) travels with a network run's commits (:meth:`PrivacyExtension.state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.member import MemberHandler
from fedswarm.rounds.privacy.release import SumRelease
from fedswarm.rounds.stages import ClientStage, ServerStage

__all__ = ["PrivacyBudget", "PrivacyExtension"]


class PrivacyBudget(Protocol):
    """Client-level (:class:`~fedswarm.privacy.dp.extension.ClientLevelBudget`) or sample-level
    (:class:`~fedswarm.privacy.dp.local.SampleLevelBudget`) accounting of a run."""

    def check_first_round(self) -> None: ...

    def record_round(self, participants: Sequence[int] = ()) -> dict[str, Any]: ...

    def report(self) -> dict[str, Any]: ...

    def stop_reason(self) -> str | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class PrivacyExtension:
    """See the module docstring.

    Parameters
    ----------
    collector
        Collects the round's updates (in the clear, masked or encrypted).
    handlers
        Member handlers of the collector's exchange kinds.
    release
        The aggregator-side DP state (the round's clip is reported from it).
    budget
        The run's privacy accounting, or ``None`` without differential privacy.
    description
        Static facts for the summary (``dp``, ``secure_aggregation``, ``weighting`` ...).
    """

    name = "privacy"

    def __init__(
        self,
        *,
        collector: Collector,
        handlers: Mapping[str, MemberHandler],
        release: SumRelease,
        budget: PrivacyBudget | None,
        description: Mapping[str, Any],
    ) -> None:
        self._collector = collector
        self._handlers = dict(handlers)
        self.release = release
        self.budget = budget
        self.description = dict(description)
        self._clip = release.clip if release.client_level else None

    def client_stages(self) -> Sequence[ClientStage]:
        return ()

    def server_stages(self) -> Sequence[ServerStage]:
        return ()

    def collector(self) -> Collector:
        return self._collector

    def member_handlers(self) -> Mapping[str, MemberHandler]:
        return self._handlers

    def _spent(self) -> dict[str, Any]:
        if self.budget is None:
            return {"epsilon": None, "delta": None, "accountant": None}
        return _json_safe(self.budget.report())  # type: ignore[no-any-return]

    def after_round(self, outcome: RoundOutcome, *, model: Parameters) -> str | None:
        """Account for the round (every selected member counts as a participant) and annotate it."""
        if self.budget is not None:
            self.budget.record_round([int(m) for m in outcome.selected])
        note = self._spent()
        if self._clip is not None:
            note["clip"] = self._clip
            self._clip = self.release.clip
        last = getattr(self._collector, "last_round", None)
        if isinstance(last, dict) and last:
            note["transport"] = _json_safe(dict(last))
        outcome.annotations["privacy"] = note
        return self.budget.stop_reason() if self.budget is not None else None

    def state_dict(self) -> dict[str, Any]:
        """The release's clip state and the budget's accounting, as JSON values."""
        out: dict[str, Any] = {"release": self.release.state_dict()}
        if self.budget is not None:
            out["budget"] = self.budget.state_dict()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the next round then runs with its clip and is accounted after its rounds).

        Raises
        ------
        ConfigurationError
            The state is of another privacy configuration.
        """
        release = state.get("release")
        if not isinstance(release, Mapping):
            raise ConfigurationError("privacy extension state: no release state")
        self.release.load_state_dict(dict(release))
        if self.budget is not None:
            budget = state.get("budget")
            if not isinstance(budget, Mapping):
                raise ConfigurationError("privacy extension state: no budget state")
            self.budget.load_state_dict(dict(budget))
        self._clip = self.release.clip if self.release.client_level else None

    def summary(self) -> Mapping[str, Any]:
        out = self._spent()
        out.update(self.description)
        if self.release.client_level:
            out["final_clip"] = self.release.clip
        return {"privacy": out}

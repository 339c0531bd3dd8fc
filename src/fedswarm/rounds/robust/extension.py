"""The robustness run extension: detection after every round, and the round's collector chain.

Built from the spec by :func:`fedswarm.spec.robust_extension.build_robustness_extension`. It contributes

* a collector when the run needs one: group-wise aggregation (:mod:`.groupwise`), the FLTrust server
  update (:mod:`.server_update`) and, in simulation only, the attackers (:mod:`fedswarm.sim.attacks`),
  each wrapping the next;
* after every round, the anomaly records of :class:`~fedswarm.rounds.robust.detection.Detector` in
  ``outcome.annotations["anomalies"]`` (rounds whose updates the aggregator cannot see are not scored),
  after the annotations of its other parts (the backdoor's success rate);
* ``flagged`` and ``detection`` in the run summary, plus its parts' summaries;
* detection's reputations as its state (:meth:`RobustnessExtension.state_dict`), which travels with a
  network run's commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fedswarm.core.parameters import Parameters
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.member import MemberHandler
from fedswarm.rounds.robust.detection import Detector
from fedswarm.rounds.stages import ClientStage, ServerStage

__all__ = ["RobustnessExtension", "RoundHook"]


class RoundHook(Protocol):
    """A part of the extension that annotates rounds and adds to the summary (an attack's report)."""

    def after_round(self, outcome: RoundOutcome, *, model: Parameters) -> str | None: ...

    def summary(self) -> Mapping[str, Any]: ...


class RobustnessExtension:
    """Detection plus an optional collector chain and round hooks."""

    name = "robustness"

    def __init__(
        self,
        *,
        detector: Detector | None,
        collector: Collector | None = None,
        hooks: Sequence[RoundHook] = (),
    ) -> None:
        self.detector = detector
        self._collector = collector
        self.hooks = tuple(hooks)

    def client_stages(self) -> Sequence[ClientStage]:
        return ()

    def server_stages(self) -> Sequence[ServerStage]:
        return ()

    def collector(self) -> Collector | None:
        return self._collector

    def member_handlers(self) -> Mapping[str, MemberHandler]:
        return {}

    def after_round(self, outcome: RoundOutcome, *, model: Parameters) -> str | None:
        stop: str | None = None
        for hook in self.hooks:
            reason = hook.after_round(outcome, model=model)
            stop = stop or reason
        if self.detector is not None and outcome.updates.shape[0] > 0:
            outcome.annotations["anomalies"] = self.detector.score_round(
                outcome.round, outcome.accepted, outcome.updates
            )
        return stop

    def state_dict(self) -> dict[str, Any]:
        """Detection's reputations (the attack hooks of a simulation keep no state that travels)."""
        return {"detector": self.detector.state_dict()} if self.detector is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        detector = state.get("detector")
        if self.detector is not None and isinstance(detector, Mapping):
            self.detector.load_state_dict(detector)

    def summary(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for hook in self.hooks:
            out.update(hook.summary())
        if self.detector is not None:
            out.update(self.detector.summary())
        return out

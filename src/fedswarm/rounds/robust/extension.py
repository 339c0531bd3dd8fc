"""The robustness run extension: detection after every round, and the round's collector chain.

Built from the spec by :func:`fedswarm.spec.robust_extension.build_robustness_extension`. It contributes

* a collector when the run needs one: group-wise aggregation (:mod:`.groupwise`), the FLTrust server
  update (:mod:`.server_update`) and, in simulation only, the attackers (:mod:`fedswarm.sim.attacks`),
  each wrapping the next;
* after every round, the anomaly records of :class:`~fedswarm.rounds.robust.detection.Detector` in
  ``outcome.annotations["anomalies"]`` (rounds whose updates the aggregator cannot see are not scored),
  after the annotations of its other parts (the backdoor's success rate);
* ``flagged`` and ``detection`` in the run summary, plus its parts' summaries;
* its state (:meth:`RobustnessExtension.state_dict`), which travels with a network run's commits:
  detection's reputations, and the state of the group-wise rule (its bucket counter, centered clipping's
  center; the strategy's own rule travels in the strategy's state instead).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.member import MemberHandler
from fedswarm.rounds.robust.detection import Detector
from fedswarm.rounds.robust.groupwise import GroupwiseCollector
from fedswarm.rounds.stages import ClientStage, ServerStage
from fedswarm.strategy.base import StatefulRule

__all__ = ["RobustnessExtension", "RoundHook", "array_from_json", "array_to_json"]


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
        """Detection's reputations and the group-wise rule's state, as JSON values (the attack hooks of a
        simulation keep no state that travels)."""
        state: dict[str, Any] = {}
        if self.detector is not None:
            state["detector"] = self.detector.state_dict()
        rule = self._group_rule()
        if rule is not None:
            state["group_rule"] = {k: array_to_json(v) for k, v in rule.state_dict().items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a missing part resets the group-wise rule, leaves detection as it is).

        Raises
        ------
        ConfigurationError
            A group-wise rule state that does not decode or does not fit the rule.
        """
        detector = state.get("detector")
        if self.detector is not None and isinstance(detector, Mapping):
            self.detector.load_state_dict(detector)
        rule = self._group_rule()
        if rule is not None:
            saved = state.get("group_rule", {})
            if not isinstance(saved, Mapping):
                raise ConfigurationError("robustness state: group_rule must be an object")
            rule.load_state_dict({str(k): array_from_json(v) for k, v in saved.items()})

    def _group_rule(self) -> StatefulRule | None:
        """The rule of the group-wise collector in the chain, if it keeps state."""
        link: object = self._collector
        while link is not None:
            if isinstance(link, GroupwiseCollector):
                return link.rule if isinstance(link.rule, StatefulRule) else None
            link = getattr(link, "inner", None)
        return None

    def summary(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for hook in self.hooks:
            out.update(hook.summary())
        if self.detector is not None:
            out.update(self.detector.summary())
        return out


def array_to_json(array: npt.NDArray[Any]) -> dict[str, Any]:
    """A numeric array as JSON values: dtype, shape and the little-endian bytes in base64 (exact)."""
    arr = np.ascontiguousarray(array)
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return {
        "dtype": little.dtype.str.lstrip("<>|="),
        "shape": list(arr.shape),
        "data": base64.b64encode(little.tobytes()).decode(),
    }


def array_from_json(value: Any) -> npt.NDArray[Any]:
    """Inverse of :func:`array_to_json`.

    Raises
    ------
    ConfigurationError
        The value is not an encoded array of a numeric dtype.
    """
    try:
        dtype = np.dtype("<" + str(value["dtype"]))
        if dtype.kind not in "iuf":
            raise ValueError(f"dtype {dtype} is not numeric")
        shape = tuple(int(x) for x in value["shape"])
        data = base64.b64decode(str(value["data"]), validate=True)
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"robustness state: not an encoded array ({exc})") from None

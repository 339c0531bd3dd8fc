"""Extensions: how privacy, robustness and other capabilities plug into a run without touching the engine.

An extension is built from the spec (see :mod:`fedswarm.spec.extensions`) and contributes any of:

* client stages (run by members on their update) and server stages (screen updates, transform the
  aggregate);
* a :class:`~fedswarm.rounds.collect.Collector` replacing the plain ``fit`` exchange (secure aggregation);
* member handlers for extra exchange kinds;
* after every round, ``after_round`` may add annotations to the outcome (recorded in metrics and on the
  ledger: ``outcome.annotations["privacy"]``, ``["anomalies"]`` ...) and may ask the run to stop (a privacy
  budget is exhausted) by returning the reason;
* ``summary()`` is merged into the run summary.

The same extension objects are built in every worker process (they are constructed from the spec), so
member-side state lives where the member runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fedswarm.core.parameters import Parameters
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.member import MemberHandler
from fedswarm.rounds.stages import ClientStage, ServerStage

__all__ = ["RunExtension"]


class RunExtension(Protocol):
    @property
    def name(self) -> str: ...

    def client_stages(self) -> Sequence[ClientStage]: ...

    def server_stages(self) -> Sequence[ServerStage]: ...

    def collector(self) -> Collector | None: ...

    def member_handlers(self) -> Mapping[str, MemberHandler]: ...

    def after_round(self, outcome: RoundOutcome, *, model: Parameters) -> str | None:
        """Annotate ``outcome.annotations``; return a reason to stop the run after this round, or None."""
        ...

    def summary(self) -> Mapping[str, Any]: ...

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

An extension that keeps server state across rounds (a privacy accountant's rounds spent, an adaptive
clip, detection's reputations) also implements :class:`StatefulExtension`: ``state_dict()`` returns it
as plain JSON values and ``load_state_dict()`` restores it. A network leader puts
:func:`extension_states` in every commit, and whoever leads next (the next swarm leader, a restarted
aggregator) restores it with :func:`load_extension_states` before leading, so what the run reports after
round ``R`` does not depend on who led.

The same extension objects are built in every worker process (they are constructed from the spec), so
member-side state lives where the member runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.member import MemberHandler
from fedswarm.rounds.stages import ClientStage, ServerStage

__all__ = ["RunExtension", "StatefulExtension", "extension_states", "load_extension_states"]


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


@runtime_checkable
class StatefulExtension(Protocol):
    """An extension whose server state must survive a change of leader (see the module docstring)."""

    @property
    def name(self) -> str: ...

    def state_dict(self) -> dict[str, Any]:
        """The server state as JSON values (str, int, finite float, bool, None, lists and str-keyed dicts)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (raises ``ConfigurationError`` if it does not fit)."""
        ...


def extension_states(extensions: Sequence[RunExtension]) -> dict[str, dict[str, Any]]:
    """``{extension name: state_dict()}`` of the extensions that keep state."""
    return {ext.name: ext.state_dict() for ext in extensions if isinstance(ext, StatefulExtension)}


def load_extension_states(extensions: Sequence[RunExtension], states: Mapping[str, Any]) -> None:
    """Restore :func:`extension_states`; a stateful extension missing from ``states`` is left as it is.

    Raises
    ------
    ConfigurationError
        ``states`` names an extension this run does not have, or a state does not fit its extension.
    """
    stateful = {ext.name: ext for ext in extensions if isinstance(ext, StatefulExtension)}
    unknown = sorted(set(states) - set(stateful))
    if unknown:
        raise ConfigurationError(f"extension state names extensions this run does not have: {unknown}")
    for name, state in states.items():
        if not isinstance(state, Mapping):
            raise ConfigurationError(f"extension state of {name!r}: expected an object")
        stateful[name].load_state_dict(state)

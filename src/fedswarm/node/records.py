"""A round's outcome as a JSON record that travels in the commit, and back.

The leader of a round serializes its :class:`~fedswarm.rounds.coordinator.RoundOutcome` (everything but
the update matrix and the model, which travels as a blob) so that every member keeps the history, and
``fedswarm up`` can rebuild the outcome to report exactly what ``fedswarm simulate`` reports.
Non-finite numbers are written as ``null``.

Run extensions' per-round annotations (``privacy``, ``anomalies`` ...) travel in the record as they are
(``annotations``). The record of the round that ends the run early also carries the reason
(``stopped_early``), which every node adopting the commit obeys, and the record of the run's last round
carries the extensions' run summary (``extensions``: ``privacy``, ``flagged``, ``detection`` ...), which
:func:`extension_summary` hands to ``fedswarm up``'s report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedswarm.core.parameters import Parameters
from fedswarm.core.task import EvalResult
from fedswarm.rounds.coordinator import MemberEvaluation, RoundOutcome
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

__all__ = ["extension_summary", "outcome_from_record", "outcome_record", "stop_reason"]


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _back(x: Any) -> float:
    return float("nan") if x is None else float(x)


def outcome_record(outcome: RoundOutcome, *, leader: str, model_digest: str, started_ms: int) -> dict[str, Any]:
    """JSON-safe record of ``outcome`` (member ids as decimal strings).

    ``started_ms`` is the leader's clock (Unix milliseconds) when it started the round: the difference
    between two rounds' values is the whole round trip, commit included (``seconds`` is only the round
    engine's part).
    """
    o = outcome
    rec: dict[str, Any] = {
        "round": o.round,
        "leader": leader,
        "started_ms": started_ms,
        "model_digest": model_digest,
        "selected": [int(m) for m in o.selected],
        "accepted": [int(m) for m in o.accepted],
        "dropouts": {str(m): r for m, r in o.dropouts.items()},
        "rejected": {str(m): r for m, r in o.rejected.items()},
        "weights": [_num(float(w)) for w in o.weights],
        "train_metrics": {k: _num(v) for k, v in o.train_metrics.items()},
        "bytes_up": o.bytes_up,
        "bytes_down": o.bytes_down,
        "seconds": o.seconds,
    }
    if o.annotations:
        rec["annotations"] = dict(o.annotations)
    if o.central is not None:
        rec["central"] = {
            "num_examples": o.central.num_examples,
            "loss": _num(o.central.loss),
            "metrics": {k: _num(v) for k, v in o.central.metrics.items()},
        }
    if o.members_eval is not None:
        e = o.members_eval
        rec["members_eval"] = {
            "members": e.members,
            "accuracy_mean": _num(e.accuracy_mean),
            "accuracy_worst10": _num(e.accuracy_worst10),
            "loss_mean": _num(e.loss_mean),
            "per_member": {str(m): _num(a) for m, a in e.per_member.items()},
        }
    return rec


def outcome_from_record(rec: Mapping[str, Any], parameters: Parameters) -> RoundOutcome:
    """Rebuild a :class:`RoundOutcome` (without the update matrix) from :func:`outcome_record`."""
    central = None
    if "central" in rec:
        c = rec["central"]
        central = EvalResult(
            num_examples=int(c["num_examples"]),
            loss=_back(c["loss"]),
            metrics={k: _back(v) for k, v in c["metrics"].items()},
        )
    members_eval = None
    if "members_eval" in rec:
        e = rec["members_eval"]
        members_eval = MemberEvaluation(
            members=int(e["members"]),
            accuracy_mean=_back(e["accuracy_mean"]),
            accuracy_worst10=_back(e["accuracy_worst10"]),
            loss_mean=_back(e["loss_mean"]),
            per_member={int(m): _back(a) for m, a in e["per_member"].items()},
        )
    return RoundOutcome(
        round=int(rec["round"]),
        selected=np.asarray(rec["selected"], dtype=np.int64),
        accepted=[int(m) for m in rec["accepted"]],
        dropouts={int(m): str(r) for m, r in rec["dropouts"].items()},
        rejected={int(m): str(r) for m, r in rec["rejected"].items()},
        parameters=parameters,
        updates=np.zeros((0, 0)),
        weights=np.asarray([_back(w) for w in rec["weights"]], dtype=np.float64),
        train_metrics={k: _back(v) for k, v in rec["train_metrics"].items()},
        bytes_up=int(rec["bytes_up"]),
        bytes_down=int(rec["bytes_down"]),
        central=central,
        members_eval=members_eval,
        seconds=float(rec["seconds"]),
        annotations=dict(rec.get("annotations") or {}),
    )


def stop_reason(commit: pb.Commit, *, record: object = None) -> str | None:
    """The reason the run stops after this commit's round (``stopped_early`` in its record), or ``None``.

    ``record``: the commit's record already parsed, if the caller has it.
    """
    if record is None:
        if not commit.record_json:
            return None
        try:
            record = json.loads(commit.record_json)
        except ValueError:
            return None
    reason = record.get("stopped_early") if isinstance(record, dict) else None
    return str(reason) if reason else None


def extension_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run-summary keys a network run adds for its extensions, as ``fedswarm simulate`` adds them:
    the last round's ``extensions`` (``privacy``, ``flagged``, ``detection`` ...) and ``stopped_early``."""
    if not records:
        return {}
    last = records[-1]
    out: dict[str, Any] = dict(last.get("extensions") or {})
    if last.get("stopped_early"):
        out["stopped_early"] = str(last["stopped_early"])
    return out

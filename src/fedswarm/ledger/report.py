"""Audit reports of a ledger as JSON (rendered as HTML by :mod:`fedswarm.ledger.report_html`), lineage and
blame as JSON and text, and one-line descriptions of entries.

A round aggregated privately (no per-update digest, see :data:`~fedswarm.ledger.audit.PRIVATE_REASON`) is
shown with its contributors and ``private: true``, never as a round without updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedswarm.ledger.audit import PRIVATE_REASON, AuditError, AuditLog, LineageStep, aggregated_privately
from fedswarm.ledger.blame import TIE_TOLERANCE, Blame, blame
from fedswarm.ledger.entries import (
    AggregateCommitted,
    Entry,
    EvaluationReported,
    FederationCreated,
    MemberAdmitted,
    MemberRemoved,
    PrivacySpent,
    RoundOpened,
    UpdateSubmitted,
)
from fedswarm.ledger.verify import VerifyReport

__all__ = [
    "REPORT_FORMAT",
    "audit_report",
    "blame_json",
    "blame_text",
    "describe",
    "lineage_json",
    "lineage_text",
]

REPORT_FORMAT = "fedswarm/audit-report/v1"


def _short(digest: str) -> str:
    return digest[:12]


def _metrics(metrics: Mapping[str, float | None]) -> str:
    return " ".join(f"{k}={'-' if v is None else f'{v:.4g}'}" for k, v in metrics.items())


def describe(entry: Entry) -> str:
    """A one-line, human-readable summary of an entry's body."""
    body = entry.body
    if isinstance(body, FederationCreated):
        return (
            f"{len(body.members)} members listed of {body.population}, strategy {body.strategy}, "
            f"initial model {_short(body.initial_model)}, quorum >{body.quorum[0]}/{body.quorum[1]}, keys {body.keys}"
        )
    if isinstance(body, MemberAdmitted):
        return f"{body.member} key {body.key.hex()[:16]} ({body.reason})" if body.reason else body.member
    if isinstance(body, MemberRemoved):
        return f"{body.member}: {body.reason}"
    if isinstance(body, RoundOpened):
        return f"round {body.round}: {len(body.selected)} selected, base model {_short(body.base_model)}"
    if isinstance(body, UpdateSubmitted):
        return (
            f"round {body.round}: update {_short(body.update)} examples={body.examples} "
            f"norm={body.norm:.4g} bytes={body.bytes}"
        )
    if isinstance(body, AggregateCommitted):
        extra = ""
        if body.rejected or body.dropouts:
            extra = f", {len(body.rejected)} rejected, {len(body.dropouts)} dropped out"
        if aggregated_privately(body):
            inputs = f"{len(body.contributors)} contributors aggregated privately (no update digests)"
        else:
            inputs = f"{len(body.inputs)} updates"
        return f"round {body.round}: {inputs} -> model {_short(body.model)}{extra}"
    if isinstance(body, EvaluationReported):
        who = "held-out set" if body.scope == "central" else f"{body.members} members"
        return f"round {body.round}: model {_short(body.model)} on {who}: {_metrics(body.metrics)}"
    if isinstance(body, PrivacySpent):
        who = body.member or "federation"
        return f"round {body.round}: {who} epsilon={body.epsilon:.4g} delta={body.delta:.3g} ({body.accountant})"
    return f"round {body.round}: {body.member} {body.action}: {body.reason} {_metrics(body.scores)}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def lineage_json(initial_model: str, steps: Sequence[LineageStep]) -> dict[str, Any]:
    """JSON form of a model's lineage (:func:`~fedswarm.ledger.audit.lineage`).

    Each step lists every contributor; in a step with ``private: true`` their ``update``, ``examples``,
    ``norm`` and ``entry`` are ``null`` and ``note`` says why.
    """
    return {
        "initial_model": initial_model,
        "steps": [
            {
                "round": s.round,
                "entry": s.entry,
                "strategy": s.strategy,
                "base_model": s.base_model,
                "model": s.model,
                "private": s.private,
                "note": PRIVATE_REASON if s.private else None,
                "contributors": [
                    {
                        "member": c.member,
                        "weight": c.weight,
                        "update": c.update,
                        "examples": c.examples,
                        "norm": c.norm,
                        "entry": c.seq,
                    }
                    for c in s.contributors
                ],
                "rejected": s.rejected,
                "dropouts": s.dropouts,
                "metrics": s.metrics,
            }
            for s in steps
        ],
    }


def lineage_text(initial_model: str, steps: Sequence[LineageStep]) -> list[str]:
    """A model's lineage as lines of text: one line per round, then one per contributor and exclusion."""
    lines = [f"initial model {initial_model}"]
    for step in steps:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in step.metrics.items() if v is not None)
        n = len(step.contributors)
        inputs = f"{n} contributors aggregated privately (no per-update digest)" if step.private else f"{n} updates"
        lines.append(f"round {step.round:>4} (entry {step.entry}): {inputs} -> {step.model} {metrics}".rstrip())
        for c in step.contributors:
            if c.update is None:
                lines.append(f"           {c.member:<14} weight={c.weight:.4g}, update aggregated privately")
            else:
                lines.append(
                    f"           {c.member:<14} update {c.update[:16]} examples={c.examples} norm={_fmt(c.norm)}"
                )
        for name, reason in {**step.rejected, **step.dropouts}.items():
            lines.append(f"           {name:<14} excluded: {reason}")
    return lines


def _shift_json(previous_round: int, round_: int, before: float, after: float) -> dict[str, Any]:
    return {
        "previous_round": previous_round,
        "round": round_,
        "before": before,
        "after": after,
        "change": after - before,
    }


def blame_json(result: Blame) -> dict[str, Any]:
    """JSON form of a :class:`~fedswarm.ledger.blame.Blame`.

    ``ties`` lists the other pairs of rounds whose change is as large (relative tolerance
    ``tie_tolerance``); ``private_rounds`` the rounds in ``rounds`` without per-contributor statistics,
    with their contributors and the reason.
    """
    return {
        "metric": result.metric,
        "scope": result.scope,
        "round": result.round,
        "previous_round": result.previous_round,
        "before": result.before,
        "after": result.after,
        "change": result.change,
        "rounds": list(result.rounds),
        "aggregate_norms": {str(k): v for k, v in result.aggregate_norms.items()},
        "contributors": [
            {
                "round": c.round,
                "member": c.member,
                "update": c.update,
                "examples": c.examples,
                "norm": c.norm,
                "distance_to_aggregate": c.distance_to_aggregate,
                "cosine_to_aggregate": c.cosine_to_aggregate,
                "distance_to_mean": c.distance_to_mean,
                "retained": c.retained,
            }
            for c in result.contributors
        ],
        "ties": [_shift_json(t.previous_round, t.round, t.before, t.after) for t in result.ties],
        "tie_tolerance": TIE_TOLERANCE,
        "private_rounds": [
            {"round": number, "contributors": list(names), "reason": PRIVATE_REASON}
            for number, names in result.private_rounds.items()
        ],
        "series": [[r, v] for r, v in result.series],
    }


def blame_text(result: Blame) -> list[str]:
    """A blame as lines of text: the shift, its ties, the contributors' statistics, and the rounds without."""
    lines = [
        f"{result.metric} ({result.scope}) shifted most from round {result.previous_round} ({result.before:.4g}) to "
        f"round {result.round} ({result.after:.4g}): {result.change:+.4g}"
    ]
    if result.ties:
        pairs = ", ".join(f"round {t.previous_round} to {t.round} ({t.change:+.4g})" for t in result.ties)
        lines.append(f"tied with {len(result.ties)} other shift(s) of the same size: {pairs}")
    if result.contributors:
        lines.append(
            f"{'round':>5}  {'member':<14} {'examples':>8} {'norm':>10} {'dist→agg':>10} {'cos→agg':>8} "
            f"{'dist→mean':>10}"
        )
    for c in result.contributors:
        lines.append(
            f"{c.round:>5}  {c.member:<14} {c.examples:>8} {c.norm:>10.4g} {_fmt(c.distance_to_aggregate):>10} "
            f"{_fmt(c.cosine_to_aggregate):>8} {_fmt(c.distance_to_mean):>10}"
        )
    for number, names in result.private_rounds.items():
        norm = result.aggregate_norms.get(number)
        step = f"; aggregate step norm {norm:.4g}" if norm is not None else ""
        lines.append(
            f"round {number}: {len(names)} contributors ({', '.join(names)}), no per-contributor statistics{step}"
        )
        lines.append(f"{'':>7}why: {PRIVATE_REASON}")
    return lines


def audit_report(log: AuditLog, verification: VerifyReport | None, *, error: str | None = None) -> dict[str, Any]:
    """The audit report as JSON-ready data: verification outcome, federation, members, rounds, blame.

    ``verification`` is the successful report, or ``None`` with ``error`` the reason it failed.
    """
    created = log.created
    rounds = []
    privacy_latest: dict[str, Any] | None = None
    for number, record in log.rounds.items():
        central = next((e.metrics for e in record.evaluations if e.scope == "central"), {})
        members = next((e.metrics for e in record.evaluations if e.scope == "members"), {})
        aggregate = record.aggregate
        rounds.append(
            {
                "round": number,
                "leader": record.opened.leader if record.opened else None,
                "selected": len(record.opened.selected) if record.opened else 0,
                "accepted": len(aggregate.contributors) if aggregate else 0,
                "contributors": list(aggregate.contributors) if aggregate else [],
                "private": aggregated_privately(aggregate) if aggregate else False,
                "rejected": dict(aggregate.rejected) if aggregate else {},
                "dropouts": dict(aggregate.dropouts) if aggregate else {},
                "model": aggregate.model if aggregate else None,
                "committed": aggregate is not None,
                "metrics": dict(central),
                "members_metrics": dict(members),
                "anomalies": [
                    {"member": a.member, "reason": a.reason, "action": a.action, "scores": dict(a.scores)}
                    for a in record.anomalies
                ],
                "privacy": [
                    {"member": p.member, "epsilon": p.epsilon, "delta": p.delta, "accountant": p.accountant}
                    for p in record.privacy
                ],
            }
        )
        for spent in record.privacy:
            if spent.member is None:
                privacy_latest = {"round": number, "epsilon": spent.epsilon, "delta": spent.delta}
    last_model = next((r["model"] for r in reversed(rounds) if r["model"]), created.initial_model)
    try:
        blamed: dict[str, Any] | None = blame_json(blame(log, metric="accuracy"))
    except AuditError:
        blamed = None
    verified: dict[str, Any] = {"ok": verification is not None, "error": error}
    if verification is not None:
        verified.update(
            {
                "entries": verification.entries,
                "root": verification.root,
                "checkpoints": [
                    {
                        "size": c.size,
                        "root": c.root,
                        "time": c.time,
                        "signer": c.signer,
                        "cosigners": c.cosigners,
                        "members": c.members,
                        "final": c.final,
                    }
                    for c in verification.checkpoints
                ],
                "final_checkpoints": verification.final_checkpoints,
                "unwitnessed": verification.unwitnessed,
                "objects": verification.objects,
                "warnings": list(verification.warnings),
            }
        )
    return {
        "format": REPORT_FORMAT,
        "federation": log.federation,
        "ledger": str(log.folder),
        "entries": log.size,
        "verification": verified,
        "created": {
            "coordinator": log.coordinator,
            "spec_digest": created.spec_digest,
            "population": created.population,
            "strategy": created.strategy,
            "initial_model": created.initial_model,
            "quorum": f">{created.quorum[0]}/{created.quorum[1]}",
            "keys": created.keys,
        },
        "members": {"registered": len(log.admitted), "removed": sorted(log.removed)},
        "final_model": last_model,
        "privacy": privacy_latest,
        "rounds": rounds,
        "blame": blamed,
    }

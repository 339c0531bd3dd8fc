"""Which round moved a metric most, and who contributed to it (``fedswarm ledger blame``).

:func:`blame` finds the largest change of a metric between two consecutive evaluations of an
:class:`~fedswarm.ledger.audit.AuditLog` (the earliest of equally large ones, the others listed as ties)
and each contributor's update statistics for the rounds in between: examples, L2 norm, and, when updates
were retained, the L2 distance and cosine similarity to the applied aggregate step (new model minus base
model) and the distance to the example-weighted mean of the round's updates. Rounds aggregated
privately have no per-contributor statistics (:data:`~fedswarm.ledger.audit.PRIVATE_REASON`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedswarm.ledger.audit import (
    AuditError,
    AuditLog,
    AuditRound,
    Scope,
    aggregated_privately,
    round_submissions,
)
from fedswarm.ledger.entries import AggregateCommitted
from fedswarm.ledger.models import ObjectStore

__all__ = ["TIE_TOLERANCE", "Blame", "ContributorStats", "Shift", "blame"]

TIE_TOLERANCE = 1e-9
"""Relative tolerance within which two metric changes count as equally large (plus 1e-12 absolute)."""


@dataclass(frozen=True, slots=True)
class ContributorStats:
    """One contributor's update in a blamed round."""

    round: int
    member: str
    update: str
    examples: int
    norm: float
    distance_to_aggregate: float | None
    cosine_to_aggregate: float | None
    distance_to_mean: float | None
    retained: bool


@dataclass(frozen=True, slots=True)
class Shift:
    """The change of a metric between two consecutive evaluations."""

    previous_round: int
    round: int
    before: float
    after: float

    @property
    def change(self) -> float:
        """``after - before``."""
        return self.after - self.before


@dataclass(frozen=True, slots=True)
class Blame:
    """The largest change of ``metric`` between consecutive evaluations, and who contributed to it.

    ``ties`` are the other pairs of evaluations whose change is as large (within :data:`TIE_TOLERANCE`);
    the blamed pair is the earliest of them. ``contributors`` hold statistics of the updates that were
    seen; ``private_rounds`` maps each round of ``rounds`` aggregated privately to its contributors, who
    have no statistics (:data:`PRIVATE_REASON`).
    """

    metric: str
    scope: Scope
    series: tuple[tuple[int, float], ...]
    round: int
    previous_round: int
    before: float
    after: float
    rounds: tuple[int, ...]
    aggregate_norms: dict[int, float | None]
    contributors: tuple[ContributorStats, ...]
    ties: tuple[Shift, ...]
    private_rounds: dict[int, tuple[str, ...]]

    @property
    def change(self) -> float:
        """``after - before``."""
        return self.after - self.before


def _series(log: AuditLog, metric: str, scope: Scope) -> list[tuple[int, float]]:
    out = []
    for number, record in log.rounds.items():
        for evaluation in record.evaluations:
            value = evaluation.metrics.get(metric)
            if evaluation.scope == scope and value is not None:
                out.append((number, float(value)))
                break
    return out


def _vector(objects: ObjectStore, digest: str) -> npt.NDArray[np.float64] | None:
    if not objects.has(digest):
        return None
    return objects.get_parameters(digest).flatten(np.float64)


def _step(log: AuditLog, aggregate: AggregateCommitted) -> npt.NDArray[np.float64] | None:
    """The applied aggregate step (new model minus base model), when both models are stored."""
    base, new = _vector(log.objects, aggregate.base_model), _vector(log.objects, aggregate.model)
    if base is None or new is None or base.shape != new.shape:
        return None
    return new - base


def _largest(series: list[tuple[int, float]]) -> tuple[Shift, tuple[Shift, ...]]:
    """The earliest largest shift between consecutive values of ``series``, and the shifts that tie with it."""
    shifts = [Shift(a, b, x, y) for (a, x), (b, y) in itertools.pairwise(series)]
    largest = max(abs(s.change) for s in shifts)
    tied = [s for s in shifts if math.isclose(abs(s.change), largest, rel_tol=TIE_TOLERANCE, abs_tol=1e-12)]
    return tied[0], tuple(tied[1:])


def _round_stats(log: AuditLog, record: AuditRound, aggregate: AggregateCommitted) -> list[ContributorStats]:
    """Statistics of the updates of a round that was not aggregated privately."""
    submissions = round_submissions(record, aggregate)
    step = _step(log, aggregate)
    vectors: dict[str, npt.NDArray[np.float64]] = {}
    for submission in submissions:
        vector = _vector(log.objects, submission.update)
        if vector is not None:
            vectors[submission.member] = vector
    mean: npt.NDArray[np.float64] | None = None
    if vectors and len(vectors) == len(submissions):
        weights = np.asarray(aggregate.weights, dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones_like(weights)
        stacked = np.stack([vectors[s.member] for s in submissions])
        mean = weights @ stacked / weights.sum()
    stats = []
    for submission in submissions:
        vector = vectors.get(submission.member)
        distance = cosine = to_mean = None
        if vector is not None and step is not None and vector.shape == step.shape:
            distance = float(np.linalg.norm(vector - step))
            denominator = float(np.linalg.norm(vector) * np.linalg.norm(step))
            cosine = float(vector @ step / denominator) if denominator > 0 else None
        if vector is not None and mean is not None:
            to_mean = float(np.linalg.norm(vector - mean))
        stats.append(
            ContributorStats(
                round=record.round,
                member=submission.member,
                update=submission.update,
                examples=submission.examples,
                norm=submission.norm,
                distance_to_aggregate=distance,
                cosine_to_aggregate=cosine,
                distance_to_mean=to_mean,
                retained=vector is not None,
            )
        )
    return stats


def blame(log: AuditLog, *, metric: str = "accuracy", scope: Scope | None = None) -> Blame:
    """Find the round where ``metric`` shifted most and the statistics of its contributors.

    Parameters
    ----------
    log
        The replayed ledger.
    metric
        A metric of ``evaluation_reported`` entries (``accuracy``, ``loss``, ...).
    scope
        ``central`` (held-out set) or ``members`` (mean over members' test splits); default: central when
        the metric was evaluated centrally at least twice, else members.

    Raises
    ------
    AuditError
        If the metric was evaluated fewer than twice, or an aggregate's input is not in the ledger.
    """
    scopes: tuple[Scope, ...] = (scope,) if scope is not None else ("central", "members")
    series: list[tuple[int, float]] = []
    chosen: Scope = scopes[0]
    for candidate in scopes:
        series = _series(log, metric, candidate)
        chosen = candidate
        if len(series) >= 2:
            break
    if len(series) < 2:
        raise AuditError(
            f"metric {metric!r} ({'/'.join(scopes)}) is evaluated in {len(series)} round(s); two are needed"
        )
    shift, ties = _largest(series)
    rounds = tuple(r for r in log.rounds if shift.previous_round < r <= shift.round)
    contributors: list[ContributorStats] = []
    aggregate_norms: dict[int, float | None] = {}
    private_rounds: dict[int, tuple[str, ...]] = {}
    for number in rounds:
        record = log.rounds[number]
        aggregate = record.aggregate
        if aggregate is None:
            continue
        step = _step(log, aggregate)
        aggregate_norms[number] = float(np.linalg.norm(step)) if step is not None else None
        if aggregated_privately(aggregate):
            private_rounds[number] = tuple(aggregate.contributors)
        else:
            contributors.extend(_round_stats(log, record, aggregate))
    return Blame(
        metric=metric,
        scope=chosen,
        series=tuple(series),
        round=shift.round,
        previous_round=shift.previous_round,
        before=shift.before,
        after=shift.after,
        rounds=rounds,
        aggregate_norms=aggregate_norms,
        contributors=tuple(contributors),
        ties=ties,
        private_rounds=private_rounds,
    )

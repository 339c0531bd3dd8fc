"""Revert: recompute a federation's model history without one member's updates, from retained inputs.

The ledger names, for every round, the updates that made the next model (``aggregate_committed``:
contributors, update digests, weights) and, with ``ledger.retain_updates``, stores each update as a
content-addressed object. Given the initial model and a way to aggregate (the run's strategy, rebuilt
from its spec, with its server optimizer state starting from scratch), :func:`replay` recomputes every
round's model with the excluded member's updates left out from round ``from_round`` on.

What a revert is, exactly: each round is re-aggregated from the *same* retained updates of the other
members. Those members trained, in the original run, from the original models; so the reverted history is
exactly the history of a run in which the member was selected but sent nothing from ``from_round`` on
(everyone else's updates and the sampling unchanged), and a first-order approximation of retraining
without the member when the other members' later updates depended on its influence. Replaying with
nothing excluded must reproduce the recorded models bit for bit; :func:`check_replay` verifies that
first, so a history whose aggregation cannot be reproduced (server-side randomness such as central DP
noise) is refused instead of being silently approximated.

A revert is impossible, and :func:`load_round_inputs` says which round and why, when an update was not
retained (``ledger.retain_updates = false``: only its digest is on the ledger), is not in this copy of the
ledger (on the network an update stays with its author and the leader of its round, see
:mod:`fedswarm.node.ledger_statements`), or the round was secure-aggregated (the aggregator only ever
held the sum, so one member's part cannot be taken out). Updates are read in either stored form: the
model's tensors (simulation) or the one float64 tensor ``update`` a network member sends.

This module is pure recomputation: the caller (``fedswarm ledger revert``) supplies the aggregation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.core.errors import FedswarmError
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.ledger.audit import AuditLog

__all__ = [
    "Aggregate",
    "RevertError",
    "RoundInputs",
    "check_replay",
    "load_round_inputs",
    "replay",
]

Vector = npt.NDArray[np.float64]
Aggregate = Callable[[int, Vector, npt.NDArray[np.float64], Vector], Vector]
"""``(round, global vector, updates (n, d), weights (n,)) -> next global vector`` (before the cast to the
model's dtypes): the strategy's ``aggregate`` plus whatever the run applied on the aggregate."""


class RevertError(FedswarmError):
    """A revert cannot be computed (inputs not retained, secure-aggregated, or not reproducible)."""


@dataclass(frozen=True, slots=True)
class RoundInputs:
    """One round's accepted updates: ``updates[i]`` from ``members[i]`` with aggregation weight ``weights[i]``."""

    round: int
    members: tuple[str, ...]
    updates: npt.NDArray[np.float64]
    weights: Vector
    model: str
    """Digest of the model the round committed."""


def load_round_inputs(log: AuditLog, *, schema: Schema) -> list[RoundInputs]:
    """Every committed round's retained updates, in round order.

    ``schema`` is the model's schema; updates are read as float64 tensors of the same names and shapes.

    Raises
    ------
    RevertError
        A round lists contributors without their update digests (secure aggregation), or an update
        object is not stored (not retained).
    """
    out: list[RoundInputs] = []
    d = schema.size
    for number, record in log.rounds.items():
        agg = record.aggregate
        if agg is None:
            continue
        if agg.contributors and len(agg.inputs) != len(agg.contributors):
            raise RevertError(
                f"round {number}: {len(agg.contributors)} contributors but {len(agg.inputs)} individual updates on "
                "the ledger: the round was secure-aggregated, the aggregator only ever held their sum, so one "
                "member's part cannot be taken out"
            )
        rows = np.empty((len(agg.inputs), d), dtype=np.float64)
        for i, (member, digest) in enumerate(zip(agg.contributors, agg.inputs, strict=True)):
            try:
                update = log.objects.get_parameters(digest)
            except KeyError:
                raise RevertError(
                    f"round {number}: the update {digest[:16]}... of {member} is not stored with the ledger "
                    f"{log.folder}: " + _why_missing(log, record.opened.leader if record.opened is not None else "")
                ) from None
            rows[i] = _update_row(update, schema, who=f"round {number}: retained update of {member}")
        out.append(
            RoundInputs(
                round=number,
                members=tuple(agg.contributors),
                updates=rows,
                weights=np.asarray(agg.weights, dtype=np.float64),
                model=agg.model,
            )
        )
    return out


def _why_missing(log: AuditLog, leader: str) -> str:
    """Why a retained update is not in this copy of the ledger."""
    if log.created.keys == "provisioned":  # written by real nodes
        return (
            f"on the network an update is kept only by its author and by the leader of its round ({leader}), "
            "never copied to other nodes: revert needs the data folder of a node that led every round (in star "
            "topology the aggregator's), and a run with ledger.retain_updates = true"
        )
    return "updates were not retained (ledger.retain_updates = false), only their digests are on the ledger"


def _update_row(update: Parameters, schema: Schema, *, who: str) -> Vector:
    """A retained update as one float64 vector: stored as the model's tensors (simulation) or as the single
    tensor ``update`` of the model's size that a network member sends (:mod:`fedswarm.transport.wire`)."""
    if tuple(update) == ("update",) and schema.size > 0 and update["update"].shape == (schema.size,):
        return np.asarray(update["update"], dtype=np.float64)
    update.check_schema(schema, who=who)
    return update.flatten()


def _cast(vector: Vector, schema: Schema) -> tuple[Vector, Parameters]:
    params = Parameters.unflatten(vector, schema)
    return params.flatten(), params


def replay(
    initial: Parameters,
    rounds: Sequence[RoundInputs],
    *,
    aggregate: Aggregate,
    exclude: str | None = None,
    from_round: int = 1,
    min_members: int = 1,
) -> list[Parameters]:
    """Recompute the model after every round of ``rounds``, leaving out ``exclude`` from ``from_round`` on.

    Each round aggregates the kept updates from the previous recomputed model; its result is cast to the
    model's dtypes (as the engine stores models) before the next round. Weights that sum to 0 count every
    update once, as the coordinator does.

    Raises
    ------
    RevertError
        A round would keep fewer than ``min_members`` updates (the run without the member would have
        aborted that round).
    """
    schema = initial.schema
    x = initial.flatten()
    models: list[Parameters] = []
    for inputs in rounds:
        keep = [
            i
            for i, member in enumerate(inputs.members)
            if not (exclude is not None and member == exclude and inputs.round >= from_round)
        ]
        if len(keep) < min_members:
            raise RevertError(
                f"round {inputs.round}: without {exclude} only {len(keep)} update(s) remain, below "
                f"strategy.min_members = {min_members}: the round would have been aborted"
            )
        updates = inputs.updates[keep]
        weights = inputs.weights[keep]
        if not weights.sum() > 0:
            weights = np.ones(len(keep))
        x, params = _cast(aggregate(inputs.round, x, updates, weights), schema)
        models.append(params)
    return models


def check_replay(rounds: Sequence[RoundInputs], models: Sequence[Parameters]) -> None:
    """Check that a replay with nothing excluded reproduced every recorded model.

    Raises
    ------
    RevertError
        Naming the first round whose recomputed model differs from the one on the ledger.
    """
    for inputs, model in zip(rounds, models, strict=True):
        got = tensor_digest(model)
        if got != inputs.model:
            raise RevertError(
                f"round {inputs.round}: re-aggregating its retained updates gives model {got[:16]}..., but the "
                f"ledger recorded {inputs.model[:16]}...: this history cannot be reproduced from its inputs "
                "(server-side randomness such as central DP noise, or a step the spec does not describe), so "
                "it cannot be recomputed without a member either"
            )

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

**Where the updates come from.** The ledger being reverted is the history; a retained update is looked up by
the digest that history records, in its own object store and then in those of other copies of the same
federation's ledger (:func:`~fedswarm.ledger.update_folders.open_update_folders`). On the network an update
stays with its author and the leader of its round (see :mod:`fedswarm.node.ledger_statements`), so a swarm,
whose leader rotates, spreads the inputs over the folders of the rounds' leaders; together they hold them
all. Another folder is trusted for nothing: its ledger must be the same history up to the shorter of the two
sizes (equal Merkle roots at that size, RFC 9162 section 2.1, so it is the same log or a prefix or an
extension of it, never a fork or another run), and every update taken from it is hashed and must match the
digest in the reverted ledger (content addressing), or the revert is refused naming the folder and the
digest.

A revert is impossible, and :func:`load_round_inputs` says which round and why, when an update was not
retained (``ledger.retain_updates = false``: only its digest is on the ledger), is in none of the folders
given (it names the member and the leader of the round, whose folder would hold it), or the round was
secure-aggregated (the aggregator only ever held the sum, so one member's part cannot be taken out).
Updates are read in either stored form: the model's tensors (simulation) or the one float64 tensor
``update`` a network member sends.

Besides reading ledgers, this module is pure recomputation: the caller (``fedswarm ledger revert``) supplies
the aggregation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import decode as decode_parameters
from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.core.errors import FedswarmError
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.ledger.audit import AuditLog
from fedswarm.ledger.update_folders import UpdateFolder, fetch_update

__all__ = [
    "Aggregate",
    "Progress",
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
Progress = Callable[[int, int], None]
"""``(rounds done, rounds in all)``, called after each round."""


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
    origins: tuple[Path, ...] = ()
    """The ledger folder each update was read from (empty when built by hand)."""


def load_round_inputs(
    log: AuditLog,
    *,
    schema: Schema,
    folders: Sequence[UpdateFolder] = (),
    progress: Progress | None = None,
) -> list[RoundInputs]:
    """Every committed round's retained updates, in round order.

    ``schema`` is the model's schema; updates are read as float64 tensors of the same names and shapes.
    Each update is looked up by the digest ``log`` records, in ``log``'s object store, then in each of
    ``folders`` in turn (see :func:`~fedswarm.ledger.update_folders.open_update_folders`), and checked against
    that digest.

    Raises
    ------
    RevertError
        A round lists contributors without their update digests (secure aggregation), an update is in none
        of the folders (naming the round, the member and the round's leader), or a folder holds an update
        whose bytes do not match its digest (naming the folder and the digest).
    """
    out: list[RoundInputs] = []
    d = schema.size
    committed = [(n, r, r.aggregate) for n, r in log.rounds.items() if r.aggregate is not None]
    for done, (number, record, agg) in enumerate(committed, start=1):
        if agg.contributors and len(agg.inputs) != len(agg.contributors):
            raise RevertError(
                f"round {number}: {len(agg.contributors)} contributors but {len(agg.inputs)} individual updates on "
                "the ledger: the round was secure-aggregated, the aggregator only ever held their sum, so one "
                "member's part cannot be taken out"
            )
        rows = np.empty((len(agg.inputs), d), dtype=np.float64)
        origins: list[Path] = []
        for i, (member, digest) in enumerate(zip(agg.contributors, agg.inputs, strict=True)):
            found = fetch_update(log, folders, digest)
            if found is None:
                leader = record.opened.leader if record.opened is not None else ""
                searched = f" nor in the {len(folders)} other folder(s) given" if folders else ""
                raise RevertError(
                    f"round {number}: the update {digest[:16]}... of {member} is not stored with the ledger "
                    f"{log.folder}{searched}: " + _why_missing(log, leader=leader, member=member)
                )
            data, origin = found
            update = decode_parameters(data, source=f"update {digest} in {origin}")
            rows[i] = _update_row(update, schema, who=f"round {number}: retained update of {member} in {origin}")
            origins.append(origin)
        out.append(
            RoundInputs(
                round=number,
                members=tuple(agg.contributors),
                updates=rows,
                weights=np.asarray(agg.weights, dtype=np.float64),
                model=agg.model,
                origins=tuple(origins),
            )
        )
        if progress is not None:
            progress(done, len(committed))
    return out


def _why_missing(log: AuditLog, *, leader: str, member: str) -> str:
    """Why a retained update is not in the folders searched, and which folder would hold it."""
    if log.created.keys == "provisioned":  # written by real nodes
        return (
            f"on the network an update is kept only by its author ({member}) and by the leader of its round "
            f"({leader}), never copied to other nodes: give the data folder of {leader} (or of {member}) with "
            "--updates-from (in star topology the aggregator's folder alone holds every round's inputs; the "
            "run needs ledger.retain_updates = true)"
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
    progress: Progress | None = None,
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
        if progress is not None:
            progress(len(models), len(rounds))
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

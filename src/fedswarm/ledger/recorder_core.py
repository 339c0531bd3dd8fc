"""The writing half of the ledger recorder: plain records in, signed entries, objects and checkpoints out.

:class:`RecorderCore` receives :class:`StartRecord` and :class:`RoundRecord` values (plain, picklable data
prepared by :class:`~fedswarm.ledger.recorder.LedgerRecorder`) and writes them: the round's entries and
objects (its model and retained updates, packed in the database) in one transaction, then, every
``checkpoint_every`` rounds, a tree head signed by the coordinator and cosigned by a quorum of members
(each cosigner checks the consistency proof from the previous checkpoint first). :func:`serve` runs a
core in a separate process, fed through a queue.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import queue
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import encoded_size
from fedswarm.core.parameters import Schema
from fedswarm.ledger.checkpoint import Checkpoint, TreeHead, cosign_many, quorum_size, sign_tree_head
from fedswarm.ledger.entries import (
    AggregateCommitted,
    AnomalyFlagged,
    EvaluationReported,
    FederationCreated,
    MemberAdmitted,
    MemberKey,
    Metrics,
    PrivacySpent,
    RoundOpened,
    UpdateSubmitted,
)
from fedswarm.ledger.merkle import verify_consistency
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import Durability, LedgerStore
from fedswarm.ledger.update_bytes import encode_rows
from fedswarm.ledger.writer import LedgerWriter

__all__ = ["COORDINATOR", "RecorderCore", "RoundRecord", "StartRecord", "Submission", "UpdateRows", "serve"]

COORDINATOR = "coordinator"


@dataclass(frozen=True, slots=True)
class StartRecord:
    """A run's start: federation, spec digest, members listed up front, initial model bytes, and the
    checkpoint quorum (strictly more than this fraction of the registered members must cosign)."""

    federation: str
    spec_digest: str
    config_digest: str
    members: tuple[str, ...]
    population: int
    strategy: str
    initial_model: bytes
    initial_digest: str
    seed: int
    quorum: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Submission:
    """An accepted update: its member, canonical bytes (or only the digest), norm, examples and size."""

    member: str
    data: bytes | None
    digest: str | None
    norm: float
    examples: float
    size: int


@dataclass(frozen=True, slots=True)
class UpdateRows:
    """Accepted updates as one float64 matrix, encoded by the writer rather than by the training process.

    Row ``i`` is the update of ``members[i]`` with aggregation weight ``examples[i]``; ``schema`` is the
    model's schema with every dtype little-endian float64 (see
    :func:`fedswarm.ledger.recorder.float64_schema`). With ``retain`` each update is stored as an object
    (its canonical safetensors bytes), otherwise only its digest is recorded.
    """

    members: tuple[str, ...]
    rows: npt.NDArray[np.float64]
    examples: tuple[float, ...]
    schema: Schema
    retain: bool

    def submissions(self) -> tuple[Submission, ...]:
        """The rows as :class:`Submission` values (canonical bytes or digest, L2 norm, size)."""
        size = encoded_size(self.schema)
        encoded = encode_rows(self.rows, self.schema) if len(self.members) else []
        out = []
        for member, row, data, examples in zip(self.members, self.rows, encoded, self.examples, strict=True):
            digest = None if self.retain else hashlib.sha256(data).hexdigest()
            stored = data if self.retain else None
            out.append(Submission(member, stored, digest, float(np.linalg.norm(row)), float(examples), size))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """A committed round as plain data.

    ``anomalies`` are ``(member, scores, reason)`` of the updates a detector flagged; ``privacy`` is the
    cumulative ``(epsilon, delta, accountant)`` after the round. Accepted updates come as ``submissions``,
    as ``updates`` (a matrix the writer encodes, recorded after ``submissions``), or both.
    """

    round: int
    selected: tuple[str, ...]
    submissions: tuple[Submission, ...]
    model: bytes
    model_digest: str
    train_metrics: Metrics
    rejected: dict[str, str]
    dropouts: dict[str, str]
    central: Metrics | None
    members_evaluated: int
    members_metrics: Metrics | None
    time_ms: int
    anomalies: tuple[tuple[str, Metrics, str], ...] = ()
    privacy: tuple[float, float, str] | None = None
    secure_contributors: tuple[str, ...] = ()
    updates: UpdateRows | None = None


class RecorderCore:
    """Writes a run into a new ledger folder.

    Parameters
    ----------
    folder
        The ledger folder to create.
    eager_members
        ``federation_created`` lists the members' keys when there are at most this many; otherwise each
        member is admitted when it is first selected.
    checkpoint_every
        Rounds between checkpoints.
    durability
        Store durability.
    """

    def __init__(
        self,
        folder: Path,
        *,
        eager_members: int,
        checkpoint_every: int,
        durability: Durability,
    ) -> None:
        self.folder = Path(folder)
        self._eager = eager_members
        self._every = checkpoint_every
        self._quorum: tuple[int, int] = (2, 3)  # replaced by the start record's
        self._durability: Durability = durability
        self._store: LedgerStore | None = None
        self._writer: LedgerWriter | None = None
        self._keys: SimulationKeys | None = None
        self._registered: set[str] = set()
        self._current_model = ""
        self._strategy = ""
        self._config_digest = ""
        self._last_checkpoint: Checkpoint | None = None
        self._rounds = 0
        self._closed = False

    def start(self, record: StartRecord) -> None:
        """Create the ledger and write ``federation_created``."""
        self._keys = keys = SimulationKeys(record.seed, coordinator=COORDINATOR)
        store = LedgerStore(self.folder, create=True, federation=record.federation, durability=self._durability)
        self._store = store
        self._writer = writer = LedgerWriter(store, batch=1 << 30)
        members: tuple[MemberKey, ...] = ()
        if record.members and len(record.members) <= self._eager:
            members = tuple(MemberKey(name, keys.member(name).public_key().raw) for name in record.members)
            self._registered.update(record.members)
        initial = writer.put_object(record.initial_model)
        if initial != record.initial_digest:
            raise ValueError(f"initial model digest {record.initial_digest} does not match its bytes ({initial})")
        self._current_model = initial
        self._strategy = record.strategy
        self._config_digest = record.config_digest
        self._quorum = record.quorum
        writer.add(
            FederationCreated(
                spec_digest=record.spec_digest,
                population=record.population,
                members=members,
                strategy=record.strategy,
                initial_model=initial,
                quorum=self._quorum,
                keys="simulated",
            ),
            author=COORDINATOR,
            key=keys.coordinator(),
        )
        writer.flush()

    def round(self, record: RoundRecord) -> None:
        """Store the round's objects, append its entries in one transaction, checkpoint when due."""
        writer, keys, _store = self._require()
        coordinator = keys.coordinator()
        for name in record.selected:
            if name not in self._registered:
                writer.add(
                    MemberAdmitted(name, keys.member(name).public_key().raw, "first selected"),
                    author=COORDINATOR,
                    key=coordinator,
                )
                self._registered.add(name)
        writer.add(
            RoundOpened(record.round, COORDINATOR, record.selected, self._config_digest, self._current_model),
            author=COORDINATOR,
            key=coordinator,
        )
        submissions = record.submissions
        if record.updates is not None:
            submissions += record.updates.submissions()
        inputs: list[str] = []
        for submission in submissions:
            if submission.data is not None:
                digest = writer.put_object(submission.data)
            elif submission.digest is not None:
                digest = submission.digest
            else:
                raise ValueError(
                    f"round {record.round}: the update of {submission.member} has neither bytes nor digest"
                )
            writer.add(
                UpdateSubmitted(record.round, digest, round(submission.examples), submission.norm, submission.size),
                author=submission.member,
                key=keys.member(submission.member),
            )
            inputs.append(digest)
        model = writer.put_object(record.model)
        if model != record.model_digest:
            raise ValueError(f"round {record.round}: model digest {record.model_digest} does not match its bytes")
        writer.add(
            AggregateCommitted(
                round=record.round,
                strategy=self._strategy,
                base_model=self._current_model,
                inputs=tuple(inputs),
                contributors=tuple(s.member for s in submissions) or record.secure_contributors,
                weights=tuple(s.examples for s in submissions) or tuple(1.0 for _ in record.secure_contributors),
                model=model,
                metrics=record.train_metrics,
                rejected=record.rejected,
                dropouts=record.dropouts,
            ),
            author=COORDINATOR,
            key=coordinator,
        )
        if record.central is not None:
            writer.add(
                EvaluationReported(record.round, model, "central", 0, record.central),
                author=COORDINATOR,
                key=coordinator,
            )
        if record.members_metrics is not None:
            writer.add(
                EvaluationReported(record.round, model, "members", record.members_evaluated, record.members_metrics),
                author=COORDINATOR,
                key=coordinator,
            )
        for member, scores, reason in record.anomalies:
            if member not in self._registered:
                raise ValueError(f"round {record.round}: anomaly flagged for {member}, who is not a member")
            writer.add(AnomalyFlagged(record.round, member, scores, reason), author=COORDINATOR, key=coordinator)
        if record.privacy is not None:
            epsilon, delta, accountant = record.privacy
            writer.add(PrivacySpent(record.round, epsilon, delta, accountant), author=COORDINATOR, key=coordinator)
        writer.flush()
        self._current_model = model
        self._rounds += 1
        if self._rounds % self._every == 0:
            self.checkpoint(record.time_ms)

    def checkpoint(self, time_ms: int) -> Checkpoint | None:
        """Sign the current tree head and have a quorum of members cosign it; ``None`` if nothing is new."""
        writer, keys, store = self._require()
        writer.flush()
        size = store.size
        previous = self._last_checkpoint
        if size == 0 or (previous is not None and previous.head.size == size):
            return None
        head = TreeHead(store.federation, size, store.root(), time_ms)
        if previous is not None:  # what each cosigner's replica checks before cosigning
            verify_consistency(
                previous.head.size, size, previous.head.root, head.root, store.consistency_proof(previous.head.size)
            )
        checkpoint = sign_tree_head(head, signer=COORDINATOR, key=keys.coordinator())
        members = sorted(self._registered)
        cosigners = members[: quorum_size(len(members), quorum=self._quorum)] if members else []
        checkpoint = checkpoint.with_cosignatures(cosign_many(checkpoint, [(m, keys.member(m)) for m in cosigners]))
        store.add_checkpoint(checkpoint)
        self._last_checkpoint = checkpoint
        return checkpoint

    def close(self) -> None:
        """Append what is pending and close the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._store is not None:
            try:
                if self._writer is not None:
                    self._writer.flush()
            finally:
                self._store.close()

    def _require(self) -> tuple[LedgerWriter, SimulationKeys, LedgerStore]:
        if self._writer is None or self._keys is None or self._store is None:
            raise ValueError("the ledger recorder was used before its run started")
        if self._closed:
            raise ValueError("the ledger recorder is closed")
        return self._writer, self._keys, self._store


def serve(commands: Any, replies: Connection, core: RecorderCore) -> None:
    """Run ``core`` on the commands of a queue until ``close`` (in a separate process).

    Each command is ``(name, payload)``. On the first error its description is sent on ``replies`` and
    the commands that follow are skipped; ``close`` closes the store and is answered with ``"closed"``.
    If the parent process dies, the store is closed (what was committed stays) and the process exits.
    """
    parent = multiprocessing.parent_process()
    failed = False
    while True:
        try:
            name, payload = commands.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                core.close()
                return
            continue
        if name == "close":
            try:
                core.close()
            except Exception as exc:
                replies.send(("error", _describe(exc)))
            replies.send(("closed", None))
            return
        if failed:
            continue
        try:
            if name == "start":
                core.start(payload)
            elif name == "round":
                core.round(payload)
            elif name == "finish":
                core.checkpoint(payload)
        except Exception as exc:
            failed = True
            replies.send(("error", _describe(exc)))


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    location = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{location}"

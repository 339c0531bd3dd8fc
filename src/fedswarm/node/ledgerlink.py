"""A node's replica of the ledger: open and self-check it, append commits' entries, catch up, raise the alarm.

Every node of a federation whose spec enables ``[ledger]`` keeps the ledger in its data folder
(``DATA/ledger``, the layout of :mod:`fedswarm.ledger.store`, which ``fedswarm ledger verify DATA``
checks). :class:`LedgerLink` is that replica as the daemon uses it, with its three parts:

* :attr:`~LedgerLink.statements` (:mod:`fedswarm.node.ledger_statements`): a member's signed statement of
  its update, and the leader's check of each statement that arrives;
* :attr:`~LedgerLink.blocks` (:mod:`fedswarm.node.ledger_builder`): the block of entries a leader builds
  for its commit;
* :attr:`~LedgerLink.witness` (:mod:`fedswarm.node.ledger_witness`): cosigning heads, gathering
  cosignatures into final checkpoints, and checking the final checkpoints that arrive.

This module keeps what they share, and the writes:

* **adopting a commit** (:meth:`LedgerLink.adopt`): the commit's entries must continue the local log, say
  what the commit says (:func:`fedswarm.ledger.roundblock.check_round_block`), admit only members the
  manifest lists with their keys, carry valid signatures and follow the rules of the history; the
  round's model (and, with ``ledger.retain_updates``, the updates this node holds) are stored beside them
  and the entries are appended in one transaction, before the node adopts the commit. The node then
  cosigns its new tree head.
* **catching up** (:func:`fedswarm.node.ledger_views.catch_up`): records a peer sent, checked the same way
  (the same admission rule, :meth:`LedgerLink.check_admissions`).
* **the alarm**: any sign of two histories (a peer's log or cosigned head that contradicts this one, a
  final checkpoint that does not describe it) or a local log whose records no longer hash to its tree
  halts the replica; the node refuses commits, assignments and leading from then on and exits non-zero.

**Admissions.** A ``member_admitted`` entry, adopted or caught up, must name a member the manifest lists
with that key, current or revoked (a member revoked since was admitted legitimately before), and not a
founding member: the creation registers those (``since == 1``), so the members it may admit are exactly
the listed ones with ``since > 1``.

**Each signature is checked once.** Entries a node built itself (a leader's block) are neither parsed nor
verified again when it adopts them; a member does not verify its own statement; the signatures of a
commit's other entries are verified in one batch (:func:`fedswarm.crypto.batch.verify_signatures`) and
the rules are replayed without checking them again.

SQLite connections belong to the thread that opened them, so every operation on the store runs on one
thread of this class (which also serializes them); network calls never run there.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto.batch import BatchVerificationError, verify_signatures
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.checkpoint import TreeHead
from fedswarm.ledger.entries import (
    Entry,
    EntryError,
    FederationCreated,
    MemberAdmitted,
    SignedEntry,
)
from fedswarm.ledger.merkle import leaf_hash, root_from_hashes
from fedswarm.ledger.replica import ForkDetected, Replica
from fedswarm.ledger.roundblock import BlockRefused, CommitFacts, DeclaredUpdate, check_round_block
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import DB_NAME, LedgerStore
from fedswarm.ledger.witness import Coordinator
from fedswarm.node.ledger_block import COORDINATOR_PREFIX, GenesisFacts, check_creation, check_founder
from fedswarm.node.ledger_builder import BlockBuilder
from fedswarm.node.ledger_statements import Statements
from fedswarm.node.ledger_witness import NodeWitness
from fedswarm.node.persist import NodeStore
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

__all__ = ["LedgerLink", "parse_records"]

log = logging.getLogger("fedswarm.node")

T = TypeVar("T")


def parse_records(records: Sequence[bytes], what: str) -> list[SignedEntry]:
    """Parse signed records (signatures are not checked here).

    Raises
    ------
    VerificationError
        Naming ``what`` and the record that does not parse.
    """
    out = []
    for index, record in enumerate(records):
        try:
            out.append(SignedEntry.from_record(bytes(record)))
        except EntryError as exc:
            raise VerificationError(f"{what}: record {index}: {exc}") from None
    return out


class LedgerLink:
    """The ledger replica of one node.

    Parameters
    ----------
    folder
        The ledger folder (``DATA/ledger``); created on first use.
    me, key
        This member's name and its provisioned Ed25519 signing key.
    federation
        The federation id every entry and head carries (the manifest's).
    genesis
        What the first entry must say, from the spec and the manifest's founding members (:meth:`creation`).
    keys
        The manifest's members and their public keys, now.
    revoked_keys
        The manifest's revoked members and the keys they were listed with, now (admissions of them before
        they were revoked are valid history); none when omitted.
    member_id
        A member's id (the order of update entries).
    blobs
        The node's blob store (models are stored in the ledger's objects from it).
    due
        Whether the head after a round becomes a checkpoint (``ledger.checkpoint_every``, the last round).
    retain
        Store the updates this node holds (``ledger.retain_updates``, see
        :mod:`fedswarm.node.ledger_statements`).
    on_alarm
        Told once when the replica halts.
    """

    def __init__(
        self,
        folder: Path,
        *,
        me: str,
        key: SigningKey,
        federation: str,
        genesis: GenesisFacts,
        keys: Callable[[], Mapping[str, bytes]],
        member_id: Callable[[str], int],
        blobs: NodeStore,
        due: Callable[[int], bool],
        retain: bool,
        on_alarm: Callable[[VerificationError], None],
        revoked_keys: Callable[[], Mapping[str, bytes]] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.me = me
        self.key = key
        self.public = key.public_key().raw
        self.federation = federation
        self.genesis = genesis
        self.keys = keys
        self.revoked_keys = revoked_keys
        self.member_id = member_id
        self.lock = threading.Condition()
        self.replica: Replica | None = None
        self.coordinator: Coordinator | None = None  # the author of entry 0, with its key and founding member
        self.reported_root: bytes | None = None  # what the records hash to, when the tree was found altered
        self._blobs = blobs
        self._on_alarm = on_alarm
        self._thread = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._alarm: VerificationError | None = None
        self._closed = False
        self._folders: set[Path] = set()
        self.statements = Statements(self, retain=retain)
        self.blocks = BlockBuilder(self)
        self.witness = NodeWitness(self, due=due)
        self.store: LedgerStore = self.run(self._open)

    # plumbing -------------------------------------------------------------------------------------
    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the ledger's thread and return its result."""
        return self._thread.submit(fn).result()

    def submit(self, fn: Callable[[], None]) -> cf.Future[None] | None:
        """Queue ``fn`` on the ledger's thread; ``None`` once the ledger is closed (the node is stopping)."""
        try:
            return self._thread.submit(fn)
        except RuntimeError:
            return None

    @property
    def alarm(self) -> VerificationError | None:
        """Why the replica halted, if it did."""
        with self.lock:
            return self._alarm

    def raise_alarm(self, alarm: VerificationError) -> VerificationError:
        """Halt the replica with ``alarm`` (the first alarm stays); returns it, to raise."""
        with self.lock:
            first = self._alarm is None
            if first:
                self._alarm = alarm
            self.lock.notify_all()
        if first:
            if isinstance(alarm, ForkDetected) and self.replica is not None:
                self.replica.halt(alarm)
            log.error("LEDGER ALARM on %s: %s", self.me, alarm)
            self._on_alarm(alarm)
        return alarm

    def check_running(self) -> None:
        """Raise the alarm if the replica halted."""
        alarm = self.alarm
        if alarm is not None:
            raise alarm

    def close(self) -> None:
        """Close the store (its write-ahead log folded in); idempotent."""
        with self.lock:
            closed, self._closed = self._closed, True
        if closed:
            return
        try:
            self.run(self.store.close)
        finally:
            self._thread.shutdown(wait=True)

    # opening and the self-check ------------------------------------------------------------------
    def _open(self) -> LedgerStore:
        if (self.folder / DB_NAME).is_file():
            store = LedgerStore(self.folder)
            if store.federation != self.federation:
                raise ConfigurationError(
                    f"{self.folder}: holds the ledger of federation {store.federation!r}, not {self.federation!r}"
                )
        else:
            store = LedgerStore(self.folder, create=True, federation=self.federation)
        if store.size:
            self.store = store
            self._load(store)
        return store

    def _load(self, store: LedgerStore) -> None:
        """Recompute the root from the stored records and replay them; a mismatch raises the alarm."""
        leaves = [leaf_hash(record) for _, record in store.records()]
        recomputed = root_from_hashes(leaves)
        if recomputed != store.root():
            self.reported_root = recomputed
            self.raise_alarm(
                VerificationError(
                    f"LEDGER ALTERED: the {len(leaves)} records in {self.folder} hash to root {recomputed.hex()[:16]}..., "
                    f"its Merkle tree says {store.root().hex()[:16]}...: an entry was edited after it was written"
                )
            )
            return
        try:
            first = store.entry(0).entry
            check_founder(first, self.genesis.founder_keys())
            self.install(first)
        except (VerificationError, EntryError) as exc:
            self.raise_alarm(VerificationError(f"LEDGER ALTERED: {self.folder} does not replay: {exc}"))
            return
        self.witness.load(store.latest_checkpoint(), size=store.size)

    def install(self, first: Entry) -> Replica:
        """The replica of the log whose entry 0 is ``first`` (the creation, by ``coordinator@<founder>``,
        checked by the caller), on the ledger's thread."""
        self.replica = Replica(self.store, coordinator_key=first.key)
        self.coordinator = Coordinator(first.author, first.key, first.author.removeprefix(COORDINATOR_PREFIX))
        return self.replica

    def creation(self) -> FederationCreated:
        """The ``federation_created`` this node expects (or writes): the spec's facts, the founding members."""
        return self.genesis.creation(self.member_id)

    def state(self) -> LedgerState | None:
        """The federation as the local log describes it (``None`` before the first entry).

        Readable from any thread: appending replaces the replica's state with a new one, it never changes
        an installed state in place, so a reader holds one consistent snapshot (its ``size`` included)."""
        replica = self.replica
        return replica.state if replica is not None else None

    # reading --------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Entries in the local log."""
        return self.run(lambda: self.store.size)

    def root(self) -> bytes:
        """The root this node reports (recomputed from the records if its tree was found altered)."""
        return self.run(lambda: self.reported_root or self.store.root())

    def object_path(self, digest: str) -> Path:
        """Where the ledger keeps object ``digest`` (a model or an update named by an entry)."""
        return self.store.objects.path(digest)

    def put_object(self, data: bytes) -> str:
        """Store an object (a model fetched from a peer while catching up); returns its digest."""
        return self.run(lambda: self.store.objects.put_bytes(data))

    # adopting a commit ----------------------------------------------------------------------------
    def adopt(
        self, envelope: pb.Envelope, body: pb.Commit, items: Sequence[SignedEntry], *, leader: str, built: bool
    ) -> None:
        """Check a commit's entries (``items``: its ``ledger_entries`` parsed) and append them (a no-op if
        they are already here). ``built``: they are the block this node built (and checked) as leader.

        Raises
        ------
        VerificationError
            The entries are refused (the reason names the entry); nothing is written.
        ForkDetected
            The commit's checkpoint contradicts the local log (the replica halts).
        """
        self.check_running()
        if not items:
            raise VerificationError(f"the commit of round {envelope.round} by {leader} carries no ledger entries")
        try:
            self.run(lambda: self._adopt(envelope, body, items, leader, built))
        except ForkDetected as exc:
            raise self.raise_alarm(exc) from None

    def _adopt(
        self, envelope: pb.Envelope, body: pb.Commit, items: Sequence[SignedEntry], leader: str, built: bool
    ) -> None:
        store, rnd = self.store, int(envelope.round)
        first, size = items[0].entry.seq, store.size
        if first < size:
            present = [store.record(s) for s in range(first, min(size, first + len(items)))]
            if present == [i.record for i in items]:
                return  # already appended (the same commit came twice, or the ledger caught up first)
            raise BlockRefused(f"round {rnd}: its entries from {first} on conflict with this ledger's")
        if first > size:
            raise BlockRefused(f"round {rnd}: its entries start at {first}, this ledger has {size} (catching up)")
        if first == 0:
            check_creation(items[0], leader, expected=self.creation())
        elif self.replica is None:
            raise BlockRefused(f"round {rnd}: this ledger does not replay, it cannot take entries")
        coordinator = items[0].entry.author if first == 0 or self.coordinator is None else self.coordinator.name
        updates = {i.member: DeclaredUpdate(i.update_digest, i.accepted) for i in body.inputs if i.update_digest}
        facts = CommitFacts(rnd, leader, body.previous_digest, body.model_digest, updates, coordinator, first == 0)
        check_round_block(items, facts)
        if not built:
            self._check_against_manifest(items, leader)
            self.verify(items)
        checkpoint = bytes(body.checkpoint)
        if checkpoint and any(isinstance(i.entry.body, MemberAdmitted) for i in items):
            self.witness.take(checkpoint, source=leader)  # counted among the members registered at its size
            checkpoint = b""
        self._store_objects(items, body)
        installed = self.replica is None
        replica = self.replica or self.install(items[0].entry)
        inputs = [i.update_digest for i in body.inputs if i.accepted and i.update_digest]
        store.append_many((), objects=self.statements.retained(rnd, inputs))  # objects first
        try:
            replica.extend(items, signatures_checked=True)
        except VerificationError:
            if installed:  # nothing was written: the ledger is still empty, entry 0 is checked again next time
                self.replica = self.coordinator = None
            raise
        self.witness.appended(TreeHead(self.federation, store.size, store.root(), int(envelope.timestamp_ms)), rnd)
        self.statements.forget(rnd)
        if checkpoint:  # after the entries: the commit is adopted at once, the checkpoint checked next
            self.submit(lambda: self.witness.take(checkpoint, source=leader))

    def _check_against_manifest(self, items: Sequence[SignedEntry], leader: str) -> None:
        """The round's configuration is this node's, and every admitted member is the manifest's."""
        for item in items:
            config = getattr(item.entry.body, "config_digest", None)
            if config is not None and config != self.genesis.config_digest:
                raise BlockRefused(f"entry {item.entry.seq}: the round was run with another configuration")
        self.check_admissions(items, source=f"in the commit by {leader}")

    def check_admissions(self, items: Sequence[SignedEntry], *, source: str) -> None:
        """Every ``member_admitted`` among ``items`` admits a member the manifest lists (current or revoked)
        with that key and ``since > 1`` (not a founding member: the creation registers those).

        Used for a commit's entries (:meth:`adopt`) and for the records of a peer
        (:func:`fedswarm.node.ledger_views.catch_up`); ``source`` ends the refusal (``"from bob"``).

        Raises
        ------
        BlockRefused
            Naming the entry, the member and ``source``.
        """
        listed: dict[str, bytes] | None = None
        for item in items:
            body, seq = item.entry.body, item.entry.seq
            if not isinstance(body, MemberAdmitted):
                continue
            if listed is None:  # read the manifest once, and only for a batch that admits someone
                listed = {**(self.revoked_keys() if self.revoked_keys is not None else {}), **self.keys()}
            if listed.get(body.member) != body.key:
                raise BlockRefused(
                    f"entry {seq}: admits {body.member} with a key that this node's manifest does not list ({source})"
                )
            if body.member in self.genesis.founder_keys():
                raise BlockRefused(
                    f"entry {seq}: admits {body.member}, a founding member registered by the creation ({source})"
                )

    def verify(self, items: Sequence[SignedEntry]) -> None:
        """Check the signature of every entry but this member's own statements, in one batch (on the ledger's
        thread).

        Raises
        ------
        BlockRefused
            Naming the first entry whose signature does not verify.
        """
        mine = self.statements.own_records()
        batch = [(i.entry.key, i.message, i.signature) for i in items if i.record not in mine]
        try:
            verify_signatures(batch)
        except BatchVerificationError as exc:
            position = [i for i in items if i.record not in mine][exc.index].entry
            raise BlockRefused(f"entry {position.seq} ({position.kind} by {position.author}): {exc}") from None

    def _store_objects(self, items: Sequence[SignedEntry], body: pb.Commit) -> None:
        """Objects first: the models the entries name are stored before the entries are appended (the updates
        this node retains go with the entries, see :mod:`fedswarm.node.ledger_statements`)."""
        digests = [body.model_digest]
        for item in items:
            if isinstance(item.entry.body, FederationCreated):
                digests.append(item.entry.body.initial_model)
        for digest in digests:
            target = self.store.objects.path(digest)
            if target.is_file():  # a node keeps its models as files (linked from its blob store)
                continue
            if not self._blobs.has(digest):
                raise BlockRefused(f"model {digest[:16]} named by the ledger is not stored on this node")
            if target.parent not in self._folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(target.parent)
            source = self._blobs.blob_path(digest)
            try:
                os.link(source, target)  # the blob store's files are immutable: share them
            except OSError:
                self.store.objects.put_bytes(b"".join(self._blobs.chunks(digest, chunk_bytes=1 << 22)))

"""A node's replica of the ledger: append each commit's entries, cosign, gather checkpoints, raise the alarm.

Every node of a federation whose spec enables ``[ledger]`` keeps the ledger in its data folder
(``DATA/ledger``, the layout of :mod:`fedswarm.ledger.store`, which ``fedswarm ledger verify DATA``
checks). :class:`LedgerLink` is that replica as the daemon uses it:

* **adopting a commit** (:meth:`LedgerLink.adopt`): the commit's entries must continue the local log, say
  what the commit says (:func:`fedswarm.ledger.roundblock.check_round_block`), carry valid signatures by
  the manifest's keys and follow the rules of the history; the round's model is stored beside them and
  the entries are appended in one transaction, before the node adopts the commit. A checkpoint the commit
  carries must be final and describe the local history. The node then cosigns its new tree head.
* **cosigning**: the head's time is the commit's signed timestamp, so every honest replica has the same
  head and cosignatures of it can be gathered by any leader (:class:`~fedswarm.ledger.witness.WitnessPool`).
* **the coordinator** of the ledger is the member that led the first round, under the name
  ``coordinator@<member>`` with that member's key (:mod:`fedswarm.node.ledger_block`).
* **the alarm**: any sign of two histories (a peer's log or cosigned head that contradicts this one, a
  final checkpoint that does not describe it) or a local log whose records no longer hash to its tree
  halts the replica; the node refuses commits, assignments and leading from then on and exits non-zero.

SQLite connections belong to the thread that opened them, so every operation on the store runs on one
thread of this class (which also serializes them); network calls never run there.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.ledger.checkpoint import Checkpoint, CosignedHead, TreeHead, cosign_head
from fedswarm.ledger.entries import (
    Body,
    Entry,
    EntryError,
    FederationCreated,
    MemberAdmitted,
    RoundOpened,
    SignedEntry,
    UpdateSubmitted,
    sign_entry,
)
from fedswarm.ledger.merkle import leaf_hash, root_from_hashes
from fedswarm.ledger.replica import ForkDetected, Replica
from fedswarm.ledger.roundblock import BlockRefused, CommitFacts, DeclaredUpdate, check_round_block
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import DB_NAME, LedgerStore
from fedswarm.ledger.witness import Coordinator, WitnessPool
from fedswarm.node.ledger_block import (
    COORDINATOR_PREFIX,
    GenesisFacts,
    assign_positions,
    coordinator_name,
    leader_bodies,
    member_order,
    predicted_seq,
    update_norm,
)
from fedswarm.node.persist import NodeStore
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

__all__ = ["LedgerLink"]

log = logging.getLogger("fedswarm.node")

T = TypeVar("T")


def _parse(records: Sequence[bytes], what: str) -> list[SignedEntry]:
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
        What the first entry must say (from the spec and the manifest).
    keys
        The manifest's members and their public keys, now.
    member_id
        A member's id (the order of update entries).
    blobs
        The node's blob store (models are stored in the ledger's objects from it).
    due
        Whether the head after a round becomes a checkpoint (``ledger.checkpoint_every``, the last round).
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
        on_alarm: Callable[[VerificationError], None],
    ) -> None:
        self.folder = Path(folder)
        self.me = me
        self.federation = federation
        self.genesis = genesis
        self._key = key
        self._public = key.public_key().raw
        self._keys = keys
        self._member_id = member_id
        self._blobs = blobs
        self._due = due
        self._on_alarm = on_alarm
        self._thread = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._lock = threading.Condition()
        self._alarm: VerificationError | None = None
        self._closed = False
        self._signed: dict[int, UpdateSubmitted] = {}
        self._received: dict[tuple[int, str], SignedEntry] = {}
        self._cosigned: CosignedHead | None = None
        self._final: Checkpoint | None = None
        self._sent_final = 0
        self._reported_root: bytes | None = None
        self._checked: tuple[bytes, ...] = ()  # the records of the block this node built and checked last
        self._folders: set[Path] = set()
        self._pool = WitnessPool()
        self._replica: Replica | None = None
        self._coordinator: Coordinator | None = None
        self._store: LedgerStore = self._run(self._open)

    # plumbing -------------------------------------------------------------------------------------
    def _run(self, fn: Callable[[], T]) -> T:
        return self._thread.submit(fn).result()

    @property
    def alarm(self) -> VerificationError | None:
        """Why the replica halted, if it did."""
        with self._lock:
            return self._alarm

    def raise_alarm(self, alarm: VerificationError) -> VerificationError:
        """Halt the replica with ``alarm`` (the first alarm stays); returns it, to raise."""
        with self._lock:
            first = self._alarm is None
            if first:
                self._alarm = alarm
            self._lock.notify_all()
        if first:
            if isinstance(alarm, ForkDetected) and self._replica is not None:
                self._replica.halt(alarm)
            log.error("LEDGER ALARM on %s: %s", self.me, alarm)
            self._on_alarm(alarm)
        return alarm

    def _check_running(self) -> None:
        alarm = self.alarm
        if alarm is not None:
            raise alarm

    def close(self) -> None:
        """Close the store (its write-ahead log folded in); idempotent."""
        with self._lock:
            closed, self._closed = self._closed, True
        if closed:
            return
        try:
            self._run(self._store.close)
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
            self._store = store
            self._load(store)
        return store

    def _load(self, store: LedgerStore) -> None:
        """Recompute the root from the stored records and replay them; a mismatch raises the alarm."""
        leaves = [leaf_hash(record) for _, record in store.records()]
        recomputed = root_from_hashes(leaves)
        if recomputed != store.root():
            self._reported_root = recomputed
            self.raise_alarm(
                VerificationError(
                    f"LEDGER ALTERED: the {len(leaves)} records in {self.folder} hash to root {recomputed.hex()[:16]}..., "
                    f"its Merkle tree says {store.root().hex()[:16]}...: an entry was edited after it was written"
                )
            )
            return
        try:
            first = store.entry(0).entry
            founder = first.author.removeprefix(COORDINATOR_PREFIX)
            self._check_founder(first, founder)
            self._replica = Replica(store, coordinator_key=first.key)
            self._coordinator = Coordinator(first.author, first.key, founder)
        except (VerificationError, EntryError) as exc:
            self.raise_alarm(VerificationError(f"LEDGER ALTERED: {self.folder} does not replay: {exc}"))
            return
        latest = store.latest_checkpoint()
        if latest is not None:
            self._final = latest
            self._pool.offer_final(latest)
            if latest.head.size == store.size:
                self._set_head(latest.head, due=False)

    def _check_founder(self, first: Entry, founder: str) -> None:
        """The first entry must be the federation's creation by a member's coordinator name, with its key."""
        if not isinstance(first.body, FederationCreated) or not first.author.startswith(COORDINATOR_PREFIX):
            raise VerificationError(f"entry 0 ({first.kind} by {first.author}) is not the creation by a coordinator")
        registered = self._keys().get(founder)
        if registered is not None and registered != first.key:
            raise VerificationError(f"entry 0 is signed by {first.author} with another key than {founder}'s")

    def _check_genesis(self, first: SignedEntry, founder: str, *, strict: bool) -> None:
        """Entry 0 as this node expects it; ``strict``: it must register exactly the manifest's members
        (when it comes with the first commit; a ledger caught up later may predate members added since)."""
        entry = first.entry
        if entry.author != coordinator_name(founder) or not isinstance(entry.body, FederationCreated):
            raise BlockRefused(f"entry 0 must create the federation as {coordinator_name(founder)}")
        manifest = self._keys()
        if manifest.get(founder) != entry.key:
            raise BlockRefused(f"entry 0 is not signed with {founder}'s key from the manifest")
        body, expected = entry.body, self.genesis.body()
        for name in ("spec_digest", "strategy", "initial_model", "quorum", "keys"):
            if getattr(body, name) != getattr(expected, name):
                raise BlockRefused(
                    f"entry 0 states {name} {getattr(body, name)!r}, this node {getattr(expected, name)!r}"
                )
        for member in body.members:
            if member.name in manifest and manifest[member.name] != member.key:
                raise BlockRefused(f"entry 0 registers another key for {member.name} than the manifest's")
        if strict and body.members != expected.members:
            raise BlockRefused("entry 0 does not register exactly the manifest's members")

    # reading --------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Entries in the local log."""
        return self._run(lambda: self._store.size)

    def root(self) -> bytes:
        """The root this node reports (recomputed from the records if its tree was found altered)."""
        return self._run(lambda: self._reported_root or self._store.root())

    def cosignature(self) -> bytes:
        """This member's cosignature of its latest head (empty before the first)."""
        with self._lock:
            return self._cosigned.encode() if self._cosigned is not None else b""

    def latest_final(self) -> Checkpoint | None:
        """The largest final checkpoint this node holds."""
        with self._lock:
            return self._final

    def has_object(self, digest: str) -> bool:
        return self._store.objects.has(digest)

    def object_path(self, digest: str) -> Path:
        """Where the ledger keeps object ``digest`` (a model named by an entry)."""
        return self._store.objects.path(digest)

    # member side ----------------------------------------------------------------------------------
    def sign_update(self, rnd: int, header: pb.UpdateHeader, data: bytes | bytearray | None) -> None:
        """Put this member's signed ``update_submitted`` and its latest cosignature into ``header``."""
        self._check_running()
        norm = update_norm(data) if data is not None and not header.dropout and not header.exchange_kind else None

        def run() -> None:
            if norm is not None and math.isfinite(norm):  # a non-finite update is refused: no statement
                body = UpdateSubmitted(
                    rnd, header.update_digest, int(header.num_examples), norm, int(header.update_size)
                )
                entry = Entry(self.federation, self._predicted(), self.me, self._public, body)
                header.ledger_entry = sign_entry(entry, self._key).record
                with self._lock:
                    self._signed[rnd] = body
                    for old in [r for r in self._signed if r < rnd - 2]:
                        del self._signed[old]

        self._run(run)
        header.ledger_cosignature = self.cosignature()

    def _predicted(self) -> int:
        size = self._store.size
        registered = self._replica.state.members() if self._replica is not None else self._keys()
        current = self._keys()
        order = member_order([n for n in registered if n in current], self._member_id)
        rank = order.index(self.me) if self.me in order else len(order)
        return predicted_seq(size, rank)

    def sign_renumbered(self, data: bytes) -> bytes:
        """Sign again, at another position, the ``update_submitted`` this member signed for a round.

        Raises
        ------
        VerificationError
            The entry is not exactly this member's statement for that round.
        """
        self._check_running()
        try:
            entry = Entry.decode(bytes(data))
        except EntryError as exc:
            raise VerificationError(f"renumbered entry: {exc}") from None
        body = entry.body
        with self._lock:
            mine = self._signed.get(body.round) if isinstance(body, UpdateSubmitted) else None
        if (entry.author, entry.key, entry.federation) != (self.me, self._public, self.federation) or mine != body:
            raise VerificationError(f"{self.me} did not sign this statement (entry {entry.seq}, {entry.kind})")
        return sign_entry(entry, self._key).record

    # leader side ----------------------------------------------------------------------------------
    def note_update(self, sender: str, rnd: int, header: pb.UpdateHeader, data: bytes | bytearray | None) -> None:
        """Check the ledger entry (and take the cosignature) that came with a member's update.

        Raises
        ------
        VerificationError
            The update carries no entry, or one that does not describe it.
        """
        if header.ledger_cosignature:
            self.note_cosignature(header.ledger_cosignature, sender=sender)
        if data is None or header.dropout or header.exchange_kind:
            return
        what = f"ledger entry of {sender}'s update for round {rnd}"
        if not header.ledger_entry:
            if not math.isfinite(update_norm(data)):
                return  # it has no statement (its norm is not a number); the round refuses it
            raise VerificationError(f"{sender}'s update for round {rnd} carries no ledger entry")
        item = _parse([header.ledger_entry], what)[0]
        entry, body = item.entry, item.entry.body
        if not isinstance(body, UpdateSubmitted) or entry.author != sender or entry.federation != self.federation:
            raise VerificationError(f"{what}: it is {entry.kind} by {entry.author}")
        if self._keys().get(sender) != entry.key:
            raise VerificationError(f"{what}: signed with another key than {sender}'s from the manifest")
        stated = (body.round, body.update, body.examples, body.bytes)
        actual = (rnd, header.update_digest, int(header.num_examples), int(header.update_size))
        if stated != actual:
            raise VerificationError(
                f"{what}: it states (round, digest, examples, bytes) {stated}, the update is {actual}"
            )
        norm = update_norm(data)
        if not math.isclose(body.norm, norm, rel_tol=1e-9, abs_tol=1e-12):
            raise VerificationError(f"{what}: it states L2 norm {body.norm!r}, the update's is {norm!r}")
        VerifyKey.from_raw(entry.key).verify(item.message, item.signature)
        with self._lock:
            self._received[(rnd, sender)] = item
            for old in [k for k in self._received if k[0] < rnd - 2]:
                del self._received[old]

    def block(
        self,
        outcome: RoundOutcome,
        *,
        digests: Mapping[int, str],
        names: Callable[[int], str],
        strategy: str,
        previous: str,
        model: str,
        renumber: Callable[[str, bytes], bytes],
    ) -> list[bytes]:
        """The records of the round this node leads, for its commit (checked as every node will check them).

        ``digests`` are the received updates by member id; ``renumber(member, entry)`` asks a member to sign
        its statement again at another position (a network call, made outside the ledger's thread).

        Raises
        ------
        VerificationError
            The round cannot be recorded: an update without its entry, a member that is not registered
            and that this node may not admit, or entries that the rules refuse.
        """
        self._check_running()
        rnd = int(outcome.round)
        # a secure sum (or updates that came through an extension's exchanges): no member stated its update,
        # so the round lists its contributors without inputs, as a secure sum does in simulation
        secure = outcome.updates.shape[0] != len(outcome.accepted) or any(
            int(m) not in digests for m in outcome.accepted
        )
        members: dict[str, SignedEntry] = {}
        accepted = {int(m) for m in outcome.accepted}
        for m, digest in [] if secure else sorted(digests.items()):
            name = names(m)
            item = self.received(rnd, name)
            if item is None or getattr(item.entry.body, "update", None) != digest:
                if m not in accepted:
                    continue  # a refused update without a statement (a non-finite one)
                raise BlockRefused(f"round {rnd}: the update of {name} has no ledger entry")
            members[name] = item
        opened, after = leader_bodies(
            outcome, leader=self.me, names=names, digests=digests, strategy=strategy,
            config=self.genesis.config_digest, previous_model=previous, model=model, secure=secure,
        )  # fmt: skip
        size, leading = self._run(lambda: self._leading_bodies(opened))
        positions = assign_positions(
            {n: i.entry.seq for n, i in members.items()}, start=size + len(leading) + 1, order=self._member_id
        )
        updates: dict[int, bytes] = {}
        for name, seq in positions.items():
            item = members[name]
            updates[seq] = item.record if seq == item.entry.seq else self._renumbered(item, seq, renumber)
        coordinator = coordinator_name(self.me)
        records: list[bytes] = []

        def add(author: str, body: Body) -> None:
            entry = Entry(self.federation, size + len(records), author, self._public, body)
            records.append(sign_entry(entry, self._key).record)

        for body in leading:
            add(coordinator, body)
        add(self.me, opened)
        records.extend(updates[seq] for seq in sorted(updates))
        for body in after:
            add(self.me, body)
        self._run(lambda: self._dry_run(records))
        self._checked = tuple(records)
        return records

    def _leading_bodies(self, opened: RoundOpened) -> tuple[int, list[Body]]:
        """The entries the coordinator writes before the round opens: the creation, or admissions."""
        size = self._store.size
        if size == 0:
            return 0, [self.genesis.body()]
        if self._replica is None or self._coordinator is None:
            raise BlockRefused("this ledger does not replay, it cannot take entries")
        state, keys = self._replica.state, self._keys()
        missing = [n for n in opened.selected if not state.is_active(n)]
        if missing and self._coordinator.member != self.me:
            raise BlockRefused(
                f"round {opened.round}: {missing[0]} is not registered on the ledger (the coordinator admits members)"
            )
        return size, [MemberAdmitted(n, keys[n], "listed in the manifest") for n in missing]

    def _renumbered(self, item: SignedEntry, seq: int, renumber: Callable[[str, bytes], bytes]) -> bytes:
        entry = replace(item.entry, seq=seq)
        wanted = entry.encode()
        record = self.sign_renumbered(wanted) if entry.author == self.me else renumber(entry.author, wanted)
        signed = _parse([record], f"{entry.author}'s renumbered entry")[0]
        if signed.message != wanted:
            raise BlockRefused(f"{entry.author} signed another entry than the renumbered one")
        VerifyKey.from_raw(entry.key).verify(signed.message, signed.signature)
        return signed.record

    def _dry_run(self, records: Sequence[bytes]) -> None:
        """Replay the rules over a block this node built (its members' signatures were checked on arrival,
        its own were just made)."""
        if self._replica is not None:
            self._replica.check(records, signatures_checked=True)
            return
        state = LedgerState()
        for item in _parse(records, "the first round's entries"):
            state.apply(item.entry)

    def received(self, rnd: int, sender: str) -> SignedEntry | None:
        """The checked entry that came with ``sender``'s update for round ``rnd``."""
        with self._lock:
            return self._received.get((rnd, sender))

    def note_cosignature(self, data: bytes, *, sender: str, wait: bool = False) -> None:
        """Gather a member's cosigned head (a quorum makes a final checkpoint); bad ones are logged.

        The work is queued on the ledger's thread; ``wait``: return only once it is done.
        """

        def run() -> None:
            try:
                item = CosignedHead.decode(data)
                if item.cosignature.member != sender:
                    raise VerificationError(f"{sender} sent a cosignature by {item.cosignature.member}")
                self._gather(item)
            except ForkDetected as exc:
                self.raise_alarm(exc)
            except VerificationError as exc:
                log.warning("ledger: cosignature from %s refused: %s", sender, exc)

        try:
            future = self._thread.submit(run)
        except RuntimeError:  # the ledger is closed: the node is stopping
            return
        if wait:
            future.result()

    def _gather(self, item: CosignedHead, *, own: bool = False) -> None:
        if self._replica is None or self._coordinator is None or self.alarm is not None:
            return
        state = self._replica.state
        final = self._pool.add(
            item, registry=state.members(), coordinator=self._coordinator, quorum=state.quorum, own=own
        )
        if final is not None:
            self._store_final(final, cosignatures_checked=True)

    def _store_final(self, checkpoint: Checkpoint, *, cosignatures_checked: bool = False) -> None:
        assert self._replica is not None
        with self._lock:
            if self._final == checkpoint:
                return  # made or checked here already
        stored = self._replica.accept_final(checkpoint, cosignatures_checked=cosignatures_checked)
        with self._lock:
            if self._final is None or checkpoint.head.size > self._final.head.size:
                self._final = checkpoint
            self._lock.notify_all()
        self._pool.offer_final(checkpoint)
        if stored:
            log.info(
                "ledger: checkpoint of %d entries is final (%d cosigners)",
                checkpoint.head.size,
                len(checkpoint.cosignatures),
            )

    def commit_checkpoint(self) -> bytes:
        """The latest final checkpoint for this node's next commit, if it did not send it yet."""
        with self._lock:
            final = self._final
            if final is None or final.head.size <= self._sent_final:
                return b""
            self._sent_final = final.head.size
        return final.encode()

    def wait_final(self, size: int, timeout: float) -> Checkpoint | None:
        """Wait up to ``timeout`` seconds for a final checkpoint of at least ``size`` entries."""
        with self._lock:
            self._lock.wait_for(
                lambda: self._alarm is not None or (self._final is not None and self._final.head.size >= size),
                timeout=max(0.0, timeout),
            )
            return self._final

    # adopting a commit ----------------------------------------------------------------------------
    def first_seq(self, body: pb.Commit) -> int:
        """Sequence number of a commit's first entry.

        Raises
        ------
        VerificationError
            The commit carries no entries, or they do not parse.
        """
        if not body.ledger_entries:
            raise VerificationError("the commit carries no ledger entries")
        return _parse(body.ledger_entries[:1], "the commit's ledger entries")[0].entry.seq

    def adopt(self, envelope: pb.Envelope, body: pb.Commit, *, leader: str) -> None:
        """Check a commit's entries and append them (a no-op if they are already here).

        Raises
        ------
        VerificationError
            The entries are refused (the reason names the entry); nothing is written.
        ForkDetected
            The commit's checkpoint contradicts the local log (the replica halts).
        """
        self._check_running()
        items = _parse(body.ledger_entries, f"ledger entries of the commit of round {envelope.round}")
        if not items:
            raise VerificationError(f"the commit of round {envelope.round} by {leader} carries no ledger entries")
        try:
            self._run(lambda: self._adopt(envelope, body, leader, items))
        except ForkDetected as exc:
            raise self.raise_alarm(exc) from None

    def _adopt(self, envelope: pb.Envelope, body: pb.Commit, leader: str, items: list[SignedEntry]) -> None:
        store, rnd = self._store, int(envelope.round)
        first, size = items[0].entry.seq, store.size
        if first < size:
            present = [store.record(s) for s in range(first, min(size, first + len(items)))]
            if present == [i.record for i in items]:
                return  # already appended (the same commit came twice, or the ledger caught up first)
            raise BlockRefused(f"round {rnd}: its entries from {first} on conflict with this ledger's")
        if first > size:
            raise BlockRefused(f"round {rnd}: its entries start at {first}, this ledger has {size} (catching up)")
        if first == 0:
            self._check_genesis(items[0], leader, strict=True)
            coordinator = Coordinator(items[0].entry.author, items[0].entry.key, leader)
        elif self._coordinator is None or self._replica is None:
            raise BlockRefused(f"round {rnd}: this ledger does not replay, it cannot take entries")
        else:
            coordinator = self._coordinator
        updates = {i.member: DeclaredUpdate(i.update_digest, i.accepted) for i in body.inputs if i.update_digest}
        facts = CommitFacts(rnd, leader, body.previous_digest, body.model_digest, updates, coordinator.name, first == 0)
        check_round_block(items, facts)
        for item in items:
            config = getattr(item.entry.body, "config_digest", None)
            if config is not None and config != self.genesis.config_digest:
                raise BlockRefused(f"entry {item.entry.seq}: the round was run with another configuration")
        self._store_models(items, body.model_digest)
        if self._replica is None:
            self._replica = Replica(store, coordinator_key=coordinator.key)
            self._coordinator = coordinator
        records = tuple(i.record for i in items)
        self._replica.extend(items, signatures_checked=records == self._checked)  # its own block: checked once
        self._set_head(
            TreeHead(self.federation, store.size, store.root(), int(envelope.timestamp_ms)), due=self._due(rnd)
        )
        if body.checkpoint:  # after the entries: the commit is adopted at once, the checkpoint checked next
            self._thread.submit(self._take_checkpoint, bytes(body.checkpoint), leader)

    def _take_checkpoint(self, data: bytes, leader: str) -> None:
        """Check and store a final checkpoint a commit carried (a fork raises the alarm)."""
        try:
            self._store_final(Checkpoint.decode(data))
        except ForkDetected as exc:
            self.raise_alarm(exc)
        except VerificationError as exc:
            log.warning("ledger: the checkpoint in %s's commit is refused: %s", leader, exc)

    def _set_head(self, head: TreeHead, *, due: bool) -> None:
        self._pool.record(head, due=due)
        if self._replica is None or self.me not in self._replica.state.members():
            return
        mine = cosign_head(head, member=self.me, key=self._key)
        with self._lock:
            self._cosigned = mine
        self._gather(mine, own=True)

    def _store_models(self, items: Sequence[SignedEntry], model: str) -> None:
        """Objects first: the models the entries name are stored before the entries are appended."""
        digests = [model]
        for item in items:
            if isinstance(item.entry.body, FederationCreated):
                digests.append(item.entry.body.initial_model)
        for digest in digests:
            if self._store.objects.has(digest):
                continue
            if not self._blobs.has(digest):
                raise BlockRefused(f"model {digest[:16]} named by the ledger is not stored on this node")
            target = self._store.objects.path(digest)
            if target.parent not in self._folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(target.parent)
            source = self._blobs.blob_path(digest)
            try:
                os.link(source, target)  # the blob store's files are immutable: share them
            except OSError:
                self._store.objects.put_bytes(b"".join(self._blobs.chunks(digest, chunk_bytes=1 << 22)))

    def put_object(self, data: bytes) -> str:
        """Store an object (a model fetched from a peer while catching up); returns its digest."""
        return self._run(lambda: self._store.objects.put_bytes(data))

    # catching up and comparing with peers ---------------------------------------------------------
    def models_named(self, records: Sequence[bytes]) -> list[str]:
        """Digests of the models ``records`` name that this ledger does not store yet."""
        out = []
        for item in _parse(records, "records"):
            body = item.entry.body
            digest = getattr(body, "model", None) if item.entry.kind == "aggregate_committed" else None
            if isinstance(body, FederationCreated):
                digest = body.initial_model
            if digest is not None and not self._store.objects.has(digest) and digest not in out:
                out.append(digest)
        return out

    def extend(self, records: Sequence[bytes]) -> None:
        """Append records a peer sent to catch up (signatures and rules checked; objects stored first).

        Raises
        ------
        VerificationError
            A record is bad or a model it names is missing (nothing is written).
        """
        self._check_running()
        items = _parse(records, "records from a peer")

        def run() -> None:
            if not items:
                return
            if items[0].entry.seq != self._store.size:
                raise VerificationError(f"records from {items[0].entry.seq} on do not continue this ledger")
            for digest in self.models_named(records):
                raise VerificationError(f"model {digest[:16]} named by the records is missing")
            if self._replica is None:
                first = items[0].entry
                founder = first.author.removeprefix(COORDINATOR_PREFIX)
                self._check_genesis(items[0], founder, strict=False)
                self._replica = Replica(self._store, coordinator_key=first.key)
                self._coordinator = Coordinator(first.author, first.key, founder)
            self._replica.extend([i.record for i in items])

        self._run(run)

    def request(
        self, *, cosign: bool = False, wait_final: bool = False, records_from: int = 0, max_records: int = 0
    ) -> pb.CheckpointRequest:
        """This node's view of the ledger, for a ``Checkpoint`` call."""
        final = self.latest_final()

        def run() -> pb.CheckpointRequest:
            return pb.CheckpointRequest(
                checkpoint=final.encode() if final is not None else b"",
                size=self._store.size,
                root=self._reported_root or self._store.root(),
                cosignature=self.cosignature() if cosign else b"",
                wait_final=wait_final,
                records_from=records_from,
                max_records=max_records,
            )

        return self._run(run)

    def reply(self, request: pb.CheckpointRequest, *, max_bytes: int) -> pb.CheckpointReply:
        """This node's answer to a peer's view: its checkpoint, size, root, a consistency proof and records."""
        final = self.latest_final()

        def run() -> pb.CheckpointReply:
            store = self._store
            out = pb.CheckpointReply(
                checkpoint=final.encode() if final is not None else b"",
                size=store.size,
                root=self._reported_root or store.root(),
                cosignature=self.cosignature(),
            )
            if self._reported_root is None and 0 < request.size < store.size:
                out.consistency.extend(store.consistency_proof(int(request.size)))
            if request.max_records and request.records_from < store.size:
                stop = min(store.size, int(request.records_from) + int(request.max_records))
                budget = max_bytes
                for _, record in store.records(int(request.records_from), stop):
                    budget -= len(record) + 8
                    if budget < 0 and out.records:
                        break
                    out.records.append(record)
            return out

        return self._run(run)

    def compare(
        self,
        peer: str,
        size: int,
        root: bytes,
        *,
        proof: Sequence[bytes] = (),
        base: int | None = None,
        checkpoint: bytes = b"",
    ) -> None:
        """Check a peer's account of its log and its final checkpoint against this replica.

        A peer that holds another history raises the alarm (the replica halts); a checkpoint that does not
        verify is logged and ignored. ``base`` is the size this node announced when it asked (the start of
        ``proof``).
        """
        if self.alarm is not None:
            return

        def run() -> None:
            if self._replica is None:
                if self._store.size == 0:
                    return
                raise VerificationError("this ledger does not replay")
            self._replica.check_peer(peer, size, root, proof=proof, base=base)
            if checkpoint:
                final = Checkpoint.decode(checkpoint)
                if final.head.size <= self._store.size:
                    self._store_final(final)

        try:
            self._run(run)
        except ForkDetected as exc:
            self.raise_alarm(exc)
        except VerificationError as exc:
            log.warning("ledger: %s's checkpoint refused: %s", peer, exc)

"""A node's replica of the ledger: check peers' checkpoints against it, catch up, refuse to fork.

Every member keeps a copy of the log. When a peer (or the round's leader) shows a signed checkpoint,
:meth:`Replica.receive_checkpoint` checks that it describes the *same* history as the local copy:

* a checkpoint no larger than the local log must carry the local root at its size;
* a larger one must come with an RFC 9162 consistency proof from the local size and root to it;
* two signed checkpoints of the same size with different roots are an equivocation.

A checkpoint of ``s`` entries is checked against the members registered when the log held ``s`` entries
(:class:`~fedswarm.ledger.state.Membership`), as ``fedswarm ledger verify`` checks it: members admitted
after ``s`` neither sign nor count towards its quorum, members removed after ``s`` still do. A checkpoint
beyond the local log is checked against the members registered now (the entries up to its size are not
here yet).

Any failure means two different histories were shown to different members: the replica raises
:class:`ForkDetected` (a :class:`~fedswarm.core.errors.VerificationError` carrying both signed heads as
evidence) and from then on refuses every operation with the same alarm, so a forked node never builds on
either history. This is the gossip check of Certificate Transparency (RFC 9162, section 8.1.4 and
following) between members instead of monitors.

The functions take checkpoints, proofs and records, never connections: the transport (gRPC between nodes,
or direct calls in simulation) ships them.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, cosign, verify_final
from fedswarm.ledger.entries import EntryError, SignedEntry
from fedswarm.ledger.merkle import leaf_hash, verify_consistency
from fedswarm.ledger.state import LedgerState, Membership
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.tree import MerkleTree, NodeKey, NodeStore

__all__ = ["ForkDetected", "Replica"]


class ForkDetected(VerificationError):
    """Two different histories of one log were shown; ``evidence`` holds the conflicting signed heads."""

    def __init__(self, message: str, *, evidence: Sequence[Checkpoint] = ()) -> None:
        super().__init__(f"FORK DETECTED: {message}")
        self.evidence = tuple(evidence)


class _Overlay:
    """Reads from a node store, buffers writes in memory: to compute a root before committing to it."""

    def __init__(self, base: NodeStore) -> None:
        self._base = base
        self._new: dict[NodeKey, bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        found = self._new.get((level, index))
        return found if found is not None else self._base.get(level, index)

    def put(self, level: int, index: int, value: bytes) -> None:
        self._new[(level, index)] = value

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        return [self.get(level, index) for level, index in keys]

    def put_many(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        for level, index, value in nodes:
            self._new[(level, index)] = value


class Replica:
    """One member's copy of the log and the checkpoints it accepted.

    Parameters
    ----------
    store
        The local, writable log (it may be empty when ``coordinator_key`` is given).
    coordinator_key
        The coordinator's key (the author of entry 0, whose key is the default). A checkpoint of ``s``
        entries is signed by the coordinator or by a member registered at size ``s`` with its key then (on
        the network, the member that gathered its cosignatures).

    Raises
    ------
    VerificationError
        If the local log is empty and no ``coordinator_key`` is given, or it breaks a rule.
    """

    def __init__(self, store: LedgerStore, *, coordinator_key: bytes | None = None) -> None:
        self._store = store
        self._state = LedgerState()
        for _seq, record in store.records():
            self._state.apply(SignedEntry.from_record(record).entry)
        if coordinator_key is None:
            if store.size == 0:
                raise VerificationError("an empty replica needs the coordinator's key to check checkpoints")
            coordinator_key = store.entry(0).entry.key
        self._coordinator_key = bytes(coordinator_key)
        self._accepted: dict[int, Checkpoint] = {}
        self._alarm: ForkDetected | None = None
        self._stored: set[int] = set()
        for checkpoint in store.checkpoints():
            self._accepted.setdefault(checkpoint.head.size, checkpoint)
            self._stored.add(checkpoint.head.size)

    @property
    def store(self) -> LedgerStore:
        """The local log."""
        return self._store

    @property
    def size(self) -> int:
        """Entries in the local log."""
        return self._store.size

    @property
    def alarm(self) -> ForkDetected | None:
        """The fork that halted this replica, if any."""
        return self._alarm

    @property
    def latest(self) -> Checkpoint | None:
        """The largest accepted checkpoint."""
        return self._accepted[max(self._accepted)] if self._accepted else None

    @property
    def state(self) -> LedgerState:
        """The federation as the local log describes it (read it, do not change it)."""
        return self._state

    @property
    def coordinator_key(self) -> bytes:
        """The coordinator's key (checkpoints are signed with it or with a registered member's)."""
        return self._coordinator_key

    def membership(self, size: int) -> Membership:
        """Who was registered when the local log held ``size`` entries: the signers and cosigners a
        checkpoint of that size is checked against. A size beyond the local log sees the members registered
        now."""
        return self._state.membership(size)

    def halt(self, alarm: ForkDetected) -> None:
        """Stop this replica with ``alarm`` (a fork found outside it, e.g. by comparing cosigned heads)."""
        if self._alarm is None:
            self._alarm = alarm

    def _check_running(self) -> None:
        if self._alarm is not None:
            raise self._alarm

    def _fork(self, message: str, evidence: Sequence[Checkpoint]) -> ForkDetected:
        self._alarm = ForkDetected(message, evidence=evidence)
        return self._alarm

    def check_peer(
        self, peer: str, size: int, root: bytes, *, proof: Sequence[bytes] = (), base: int | None = None
    ) -> None:
        """Check a peer's account of its log (``size`` entries hashing to ``root``) against the local one.

        The account need not be signed: the transport authenticated the peer, and a peer holding another
        history than this node's is a fork whoever is to blame. When the peer's log is longer, ``proof``
        must be the consistency proof to ``size`` from ``base`` entries (default: the local log's size;
        the size this node announced when it asked, if it appended entries since).

        Raises
        ------
        ForkDetected
            Naming the peer, both sizes and roots; the replica halts.
        """
        self._check_running()
        local_size = self._store.size
        if size <= local_size:
            local_root = self._store.root(size)
            if local_root != bytes(root):
                raise self._fork(
                    f"{peer} holds another history: its {size} entries hash to {bytes(root).hex()[:16]}..., "
                    f"the first {size} entries here to {local_root.hex()[:16]}... (this log has {local_size})",
                    self._accepted_at_or_above(size),
                )
            return
        start = local_size if base is None else min(base, local_size)
        try:
            verify_consistency(start, size, self._store.root(start), bytes(root), proof)
        except VerificationError as exc:
            raise self._fork(
                f"{peer}'s log of {size} entries (root {bytes(root).hex()[:16]}...) does not extend the first "
                f"{start} entries here (root {self._store.root(start).hex()[:16]}...): {exc}",
                self._accepted_at_or_above(0),
            ) from None

    def accept_final(
        self,
        checkpoint: Checkpoint,
        *,
        quorum: tuple[int, int] | None = None,
        proof: Sequence[bytes] = (),
        cosignatures_checked: bool = False,
    ) -> bool:
        """Check a checkpoint that claims to be final and store it; ``True`` if it was new here.

        A checkpoint of ``s`` entries must be cosigned by strictly more than ``quorum`` (default: the
        log's) of the members registered at size ``s`` (:meth:`membership`: those admitted later do not
        count, those removed later do), signed by the coordinator or a member registered at size ``s`` and
        describe the local history (:meth:`receive_checkpoint`). Checkpoints beyond the local log are
        checked against the members registered now, and not stored. ``cosignatures_checked``: the caller
        checked every cosignature against the registered keys (it gathered them itself); only the
        cosigners registered at size ``s`` with those keys are counted then. The signer's signature is not
        checked twice when it is the same signature as a cosignature by the same key (the signer cosigned
        the head it signs).

        Raises
        ------
        VerificationError
            A bad signature, too few cosigners, another federation (the replica keeps running).
        ForkDetected
            It contradicts the local log or another checkpoint; the replica halts.
        """
        self._check_running()
        membership = self.membership(checkpoint.head.size)
        members, fraction = membership.members, quorum or membership.quorum
        if cosignatures_checked:
            cosigners = {c.member for c in checkpoint.cosignatures if members.get(c.member) == c.key}
            need = membership.needed(quorum=fraction)
            if len(cosigners) < need:
                raise VerificationError(
                    f"checkpoint of size {checkpoint.head.size} is not final: {len(cosigners)} of {len(members)} "
                    f"members registered at that size cosigned, {need} are needed"
                )
        else:
            verify_final(checkpoint, members, quorum=fraction)
        cosigned = any((c.key, c.signature) == (checkpoint.key, checkpoint.signature) for c in checkpoint.cosignatures)
        self._receive(checkpoint, proof=proof, signed=cosigned)
        size = checkpoint.head.size
        if size > self._store.size or size in self._stored:
            return False
        self._store.add_checkpoint(checkpoint)
        self._stored.add(size)
        return True

    def extend(self, records: Sequence[bytes | SignedEntry], *, signatures_checked: bool = False) -> list[SignedEntry]:
        """Append records that no checkpoint covers yet (a round's entries as its commit carries them).

        Every record is parsed, its signature checked (unless ``signatures_checked``: the caller checked
        exactly these records with :meth:`check`) and its rules replayed on a copy of the state; the
        records are written, in one transaction, only if all pass.

        Raises
        ------
        VerificationError
            Naming the first bad record (nothing is written).
        """
        self._check_running()
        signed, trial = self._check_records(self._store.size, records, verify=not signatures_checked)
        self._store.append_many(signed)
        self._state = trial
        return signed

    def check(self, records: Sequence[bytes | SignedEntry], *, signatures_checked: bool = False) -> None:
        """What :meth:`extend` checks, without writing anything.

        Raises
        ------
        VerificationError
            Naming the first bad record.
        """
        self._check_running()
        self._check_records(self._store.size, records, verify=not signatures_checked)

    def _check_records(
        self, start: int, records: Sequence[bytes | SignedEntry], *, verify: bool
    ) -> tuple[list[SignedEntry], LedgerState]:
        signed: list[SignedEntry] = []
        trial = self._state.copy()
        keys: dict[bytes, VerifyKey] = {}
        for offset, record in enumerate(records):
            seq = start + offset
            try:
                item = record if isinstance(record, SignedEntry) else SignedEntry.from_record(record)
            except EntryError as exc:
                raise VerificationError(f"entry {seq}: {exc}") from None
            try:
                verify_key = keys.get(item.entry.key)
                if verify_key is None and verify:
                    verify_key = keys[item.entry.key] = VerifyKey.from_raw(item.entry.key)
                if verify_key is not None:
                    verify_key.verify(item.message, item.signature)
                trial.apply(item.entry)
            except VerificationError as exc:
                raise VerificationError(f"entry {seq} ({item.entry.kind} by {item.entry.author}): {exc}") from None
            signed.append(item)
        return signed, trial

    def receive_checkpoint(self, checkpoint: Checkpoint, *, proof: Sequence[bytes] = ()) -> None:
        """Accept a peer's checkpoint if it describes the local history (or extends it, with ``proof``).

        ``proof`` is the consistency proof from the local size to the checkpoint's size when the
        checkpoint is larger than the local log (ask the peer for it); otherwise it is ignored.

        A checkpoint of ``s`` entries is signed by the coordinator or by a member registered at size ``s``
        with its key then (:meth:`membership`; beyond the local log, a member registered now).

        Raises
        ------
        VerificationError
            If the checkpoint is not properly signed by the coordinator or a member registered at its size
            with its key then, or is for another federation (the replica keeps running: a forged message is
            not a fork).
        ForkDetected
            If it contradicts the local log or an accepted checkpoint; the replica halts.
        """
        self._receive(checkpoint, proof=proof, signed=False)

    def _receive(self, checkpoint: Checkpoint, *, proof: Sequence[bytes], signed: bool) -> None:
        """:meth:`receive_checkpoint`; ``signed``: the signer's signature was checked already."""
        self._check_running()
        head = checkpoint.head
        if head.federation != self._store.federation:
            raise VerificationError(f"checkpoint for federation {head.federation!r}, not {self._store.federation!r}")
        signer_key = self._signer_key(checkpoint)
        if not signed or checkpoint.key != signer_key:
            checkpoint.verify_signature(signer_key=signer_key)
        known = self._accepted.get(head.size)
        if known is not None and known.head.root != head.root:
            raise self._fork(
                f"two signed checkpoints of size {head.size} have different roots "
                f"({known.head.root.hex()[:16]}... and {head.root.hex()[:16]}...)",
                (known, checkpoint),
            )
        local_size = self._store.size
        if head.size <= local_size:
            local_root = self._store.root(head.size)
            if local_root != head.root:
                raise self._fork(
                    f"a checkpoint of size {head.size} has root {head.root.hex()[:16]}..., the local log has "
                    f"{local_root.hex()[:16]}... at that size",
                    (checkpoint, *self._accepted_at_or_above(head.size)),
                )
        else:
            try:
                verify_consistency(local_size, head.size, self._store.root(), head.root, proof)
            except VerificationError as exc:
                raise self._fork(
                    f"the checkpoint of size {head.size} does not extend the local log of {local_size} entries: {exc}",
                    (checkpoint, *self._accepted_at_or_above(0)),
                ) from None
        if known is None:
            self._accepted[head.size] = checkpoint

    def _signer_key(self, checkpoint: Checkpoint, state: LedgerState | None = None) -> bytes:
        """The key ``checkpoint``'s signer must sign with: the coordinator's, or the key of a member
        registered at the checkpoint's size in ``state`` (default: the replica's).

        Raises
        ------
        VerificationError
            The signer is neither.
        """
        state = self._state if state is None else state
        if state.coordinator is None or checkpoint.signer == state.coordinator:
            return self._coordinator_key
        try:
            return state.membership(checkpoint.head.size).signer_key(checkpoint.signer)
        except VerificationError as exc:
            raise VerificationError(f"checkpoint of size {checkpoint.head.size}: {exc}") from None

    def _accepted_at_or_above(self, size: int) -> list[Checkpoint]:
        return [c for s, c in sorted(self._accepted.items()) if s >= size][:1]

    def append(self, records: Sequence[bytes], *, checkpoint: Checkpoint) -> None:
        """Catch up: append ``records`` (the entries after the local log) that a checkpoint covers.

        Every record is parsed, its signature checked and its rules replayed; the checkpoint must be signed
        by the coordinator or a member registered at its size (the records included), and the resulting
        root must be the checkpoint's root before anything is written.

        Raises
        ------
        VerificationError
            If a record is bad or breaks a rule (nothing is written).
        ForkDetected
            If the records do not yield the checkpoint's root.
        """
        self._check_running()
        start = self._store.size
        if checkpoint.head.size != start + len(records):
            raise VerificationError(
                f"{len(records)} records after entry {start - 1} do not reach the checkpoint's size {checkpoint.head.size}"
            )
        signed, trial = self._check_records(start, records, verify=True)
        checkpoint.verify_signature(signer_key=self._signer_key(checkpoint, trial))
        overlay = MerkleTree(_Overlay(self._store.tree.store), size=start)
        overlay.extend([leaf_hash(r) for r in records])
        if overlay.root() != checkpoint.head.root:
            raise self._fork(
                f"the records offered for entries {start}..{checkpoint.head.size - 1} do not yield the checkpoint's root",
                (checkpoint,),
            )
        self._store.append_many(signed)
        self._state = trial
        self._receive(checkpoint, proof=(), signed=True)
        if checkpoint.head.size not in self._stored:
            self._store.add_checkpoint(checkpoint)
            self._stored.add(checkpoint.head.size)

    def cosign(
        self, checkpoint: Checkpoint, *, member: str, key: SigningKey, proof: Sequence[bytes] = ()
    ) -> Cosignature:
        """Check the checkpoint against the local log, then cosign it as ``member``.

        Raises
        ------
        VerificationError, ForkDetected
            As :meth:`receive_checkpoint`; nothing is signed then.
        """
        self.receive_checkpoint(checkpoint, proof=proof)
        return cosign(checkpoint, member=member, key=key)

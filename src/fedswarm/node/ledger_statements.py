"""Members' signed statements of their updates: made by a member, checked by the leader, kept for revert.

**Member side.** With its update a member sends its signed ``update_submitted`` (the update's digest, size,
L2 norm and example count) at the position the entry has when every registered member submits
(:func:`fedswarm.node.ledger_block.predicted_seq`); the leader may ask it to sign the same statement again
at another position (:meth:`Statements.sign_again`), which it does only for a statement it made.

**Leader side.** :meth:`Statements.check` refuses an update whose statement is missing or does not describe
it (round, digest, examples, size, norm, the author's key in the manifest, the signature); the checked
statements wait for the round's block.

**Who keeps the updates** (``ledger.retain_updates``). An update travels only from its author to the round's
leader, and the ledger never moves it further (catching up fetches models, never updates): so each member
stores its own update and the leader every update it aggregated, each with the round's entries. A node's
folder therefore holds every input of the rounds it led and its own contributions; ``fedswarm ledger revert``
needs the inputs of every round: the star aggregator's folder has them all (it leads every round); in a
swarm, revert on one member's folder is given the other leaders' folders with ``--updates-from``. The bytes are those sent (one float64 tensor named ``update``,
:mod:`fedswarm.transport.wire`), named by the digest the entry states. They are held in memory (the buffer the
update was sent or received in, not a copy) until the round's commit is adopted, then stored in one
transaction right before the entries (:meth:`fedswarm.ledger.store.LedgerStore.append_many`: packed into the
ledger's database, or as files when large): objects first, so an entry never names an update that was to be
retained and is not.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import VerifyKey
from fedswarm.ledger.entries import Entry, EntryError, SignedEntry, UpdateSubmitted, sign_entry
from fedswarm.node.ledger_block import member_order, predicted_seq, update_norm
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

if TYPE_CHECKING:
    from fedswarm.node.ledgerlink import LedgerLink

__all__ = ["Statements"]

_KEEP_ROUNDS = 2
"""Statements and held updates of rounds older than this many rounds before the last adopted one are dropped."""


class Statements:
    """The update statements a node makes and receives, and the updates it holds for retention.

    Parameters
    ----------
    link
        The node's replica.
    retain
        Hold the updates (see the module docstring) so that they are stored when the round is appended.
    """

    def __init__(self, link: LedgerLink, *, retain: bool) -> None:
        self._link = link
        self._retain = retain
        self._lock = threading.Lock()
        self._signed: dict[int, UpdateSubmitted] = {}  # this member's statement per round
        self._own: dict[int, set[bytes]] = {}  # the records of those statements (as first signed, and again)
        self._received: dict[tuple[int, str], SignedEntry] = {}
        self._held: dict[tuple[int, str], bytes | bytearray] = {}  # (round, digest) -> its bytes, to retain
        self._keys: dict[bytes, VerifyKey] = {}

    # member side ----------------------------------------------------------------------------------
    def sign(self, rnd: int, header: pb.UpdateHeader, data: bytes | bytearray | None) -> None:
        """Put this member's signed ``update_submitted`` and its latest cosignature into ``header``."""
        link = self._link
        link.check_running()
        plain = data is not None and not header.dropout and not header.exchange_kind
        norm = update_norm(data) if plain and data is not None else None
        if norm is not None and math.isfinite(norm):  # a non-finite update is refused: no statement
            body = UpdateSubmitted(rnd, header.update_digest, int(header.num_examples), norm, int(header.update_size))
            seq = self._predicted()
            record = sign_entry(Entry(link.federation, seq, link.me, link.public, body), link.key).record
            header.ledger_entry = record
            with self._lock:
                self._signed[rnd] = body
                self._own.setdefault(rnd, set()).add(record)
                if self._retain and data is not None:
                    self._held[(rnd, header.update_digest)] = data
        header.ledger_cosignature = link.witness.cosignature()

    def _predicted(self) -> int:
        link = self._link
        current, state = link.keys(), link.state()
        registered = state.members() if state is not None else current
        order = member_order([n for n in registered if n in current], link.member_id)
        rank = order.index(link.me) if link.me in order else len(order)
        return predicted_seq(state.size if state is not None else 0, rank)

    def sign_again(self, entry: Entry) -> bytes:
        """Sign again, at another position, the ``update_submitted`` this member signed for a round.

        Raises
        ------
        VerificationError
            The entry is not exactly this member's statement for that round.
        """
        link = self._link
        link.check_running()
        body = entry.body
        with self._lock:
            mine = self._signed.get(body.round) if isinstance(body, UpdateSubmitted) else None
        if (entry.author, entry.key, entry.federation) != (link.me, link.public, link.federation) or mine != body:
            raise VerificationError(f"{link.me} did not sign this statement (entry {entry.seq}, {entry.kind})")
        record = sign_entry(entry, link.key).record
        with self._lock:
            self._own.setdefault(body.round, set()).add(record)
        return record

    def own_records(self) -> frozenset[bytes]:
        """The records of this member's own recent statements (it need not verify its own signature)."""
        with self._lock:
            return frozenset(r for records in self._own.values() for r in records)

    # leader side ----------------------------------------------------------------------------------
    def check(self, sender: str, rnd: int, header: pb.UpdateHeader, data: bytes | bytearray | None) -> None:
        """Check the statement that came with a member's update (and hold the update, to retain it).

        Raises
        ------
        VerificationError
            The update carries no statement, or one that does not describe it.
        """
        if data is None or header.dropout or header.exchange_kind:
            return
        link = self._link
        what = f"ledger entry of {sender}'s update for round {rnd}"
        norm = update_norm(data)
        if not header.ledger_entry:
            if not math.isfinite(norm):
                return  # it has no statement (its norm is not a number); the round refuses it
            raise VerificationError(f"{sender}'s update for round {rnd} carries no ledger entry")
        try:
            item = SignedEntry.from_record(bytes(header.ledger_entry))
        except EntryError as exc:
            raise VerificationError(f"{what}: {exc}") from None
        entry, body = item.entry, item.entry.body
        if not isinstance(body, UpdateSubmitted) or entry.author != sender or entry.federation != link.federation:
            raise VerificationError(f"{what}: it is {entry.kind} by {entry.author}")
        if link.keys().get(sender) != entry.key:
            raise VerificationError(f"{what}: signed with another key than {sender}'s from the manifest")
        stated = (body.round, body.update, body.examples, body.bytes)
        actual = (rnd, header.update_digest, int(header.num_examples), int(header.update_size))
        if stated != actual:
            raise VerificationError(
                f"{what}: it states (round, digest, examples, bytes) {stated}, the update is {actual}"
            )
        if not math.isclose(body.norm, norm, rel_tol=1e-9, abs_tol=1e-12):
            raise VerificationError(f"{what}: it states L2 norm {body.norm!r}, the update's is {norm!r}")
        with self._lock:
            own = sender == link.me and item.record in self._own.get(rnd, ())
        if not own:  # this node's own update, through its loopback: signed here
            key = self._keys.get(entry.key)
            if key is None:
                key = self._keys[entry.key] = VerifyKey.from_raw(entry.key)
            key.verify(item.message, item.signature)
        with self._lock:
            self._received[(rnd, sender)] = item
            if self._retain:
                self._held[(rnd, header.update_digest)] = data

    def received(self, rnd: int, sender: str) -> SignedEntry | None:
        """The checked statement that came with ``sender``'s update for round ``rnd``."""
        with self._lock:
            return self._received.get((rnd, sender))

    # retention ------------------------------------------------------------------------------------
    def retained(self, rnd: int, digests: Iterable[str]) -> list[tuple[str, bytes]]:
        """``(digest, bytes)`` of the updates among ``digests`` of round ``rnd`` that this node holds."""
        with self._lock:
            held = [(d, self._held[(rnd, d)]) for d in dict.fromkeys(digests) if (rnd, d) in self._held]
        return [(d, bytes(data)) for d, data in held]

    def forget(self, rnd: int) -> None:
        """Round ``rnd`` is adopted: drop the updates held up to it and the statements of long-past rounds."""
        with self._lock:
            for key in [k for k in self._held if k[0] <= rnd]:
                del self._held[key]
            for key in [k for k in self._received if k[0] < rnd - _KEEP_ROUNDS]:
                del self._received[key]
            for old in [r for r in self._signed if r < rnd - _KEEP_ROUNDS]:
                del self._signed[old]
                self._own.pop(old, None)

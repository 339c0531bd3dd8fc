"""The block of ledger entries a round's leader puts into its commit.

A block is, in append order: in round 1 the federation's creation (``federation_created`` by
``coordinator@<leader>``); the admissions of members that take part for the first time; the leader's
``round_opened``; the members' signed statements of the updates the round used, each at its position
(:func:`fedswarm.node.ledger_block.assign_positions`; members whose position moved sign again); the
leader's ``aggregate_committed``, evaluations and extension reports. The leader checks the block as every
node will (the rules of the history, replayed on a copy) before it sends it, and keeps the parsed entries
so that adopting its own commit checks nothing twice.

**Admissions, whoever leads.** A member listed in the manifest that is not registered on the ledger yet is
admitted (``member_admitted`` with its manifest key) in the block of the first round that selects it, or
that it leads: exactly once, since the next block starts from a log where it is registered. The round's
leader writes the admission when it is registered itself (the founding member as the ledger's coordinator,
whose key it holds); a leader that is not (a member that joined and leads before anyone selected it) asks
a registered member of the round to sign it
(:meth:`BlockBuilder.sign_admission`, over the same ``Checkpoint`` call as a renumbering), so that the
founding member, or any other, need not be alive. Every node checks an admitted member and its key against
its own manifest before it appends the block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import VerifyKey
from fedswarm.ledger.entries import Body, Entry, EntryError, MemberAdmitted, SignedEntry, sign_entry
from fedswarm.ledger.roundblock import BlockRefused
from fedswarm.ledger.state import LedgerState
from fedswarm.node.ledger_block import assign_positions, coordinator_name, leader_bodies, member_order
from fedswarm.rounds.coordinator import RoundOutcome

if TYPE_CHECKING:
    from fedswarm.node.ledgerlink import LedgerLink

__all__ = ["BlockBuilder", "Signer"]

Signer = Callable[[str, bytes], bytes]
"""``ask(member, entry bytes) -> record``: a network call asking ``member`` to sign an entry of its own."""


class BlockBuilder:
    """Builds the blocks of the rounds this node leads; signs admissions for other leaders' blocks."""

    def __init__(self, link: LedgerLink) -> None:
        self._link = link
        self._built: tuple[tuple[bytes, ...], list[SignedEntry]] = ((), [])

    def built(self, records: Sequence[bytes]) -> list[SignedEntry] | None:
        """The parsed entries when ``records`` are the block this node built last (already checked)."""
        if tuple(records) == self._built[0] and records:
            return self._built[1]
        return None

    def block(
        self,
        outcome: RoundOutcome,
        *,
        digests: Mapping[int, str],
        names: Callable[[int], str],
        strategy: str,
        previous: str,
        model: str,
        ask: Signer,
    ) -> list[bytes]:
        """The records of the round this node leads, for its commit (checked as every node will check them).

        ``digests`` are the received updates by member id; ``ask`` asks a member to sign an entry of its
        own (its statement at a new position, or an admission): a network call, made outside the ledger's
        thread.

        Raises
        ------
        VerificationError
            The round cannot be recorded: an update without its statement, a member the manifest does not
            list, no registered member to sign an admission, or entries that the rules refuse.
        """
        link = self._link
        link.check_running()
        rnd = int(outcome.round)
        # a secure sum (or updates that came through an extension's exchanges): no member stated its update,
        # so the round lists its contributors without inputs, as a secure sum does in simulation
        secure = outcome.updates.shape[0] != len(outcome.accepted) or any(
            int(m) not in digests for m in outcome.accepted
        )
        statements: dict[str, SignedEntry] = {}
        accepted = {int(m) for m in outcome.accepted}
        for m, digest in [] if secure else sorted(digests.items()):
            name = names(m)
            item = link.statements.received(rnd, name)
            if item is None or getattr(item.entry.body, "update", None) != digest:
                if m not in accepted:
                    continue  # a refused update without a statement (a non-finite one)
                raise BlockRefused(f"round {rnd}: the update of {name} has no ledger entry")
            statements[name] = item
        opened, after = leader_bodies(
            outcome, leader=link.me, names=names, digests=digests, strategy=strategy,
            config=link.genesis.config_digest, previous_model=previous, model=model, secure=secure,
        )  # fmt: skip
        size, registered = self._registered()
        items: list[SignedEntry] = []
        if size == 0:  # the creation registers the founding members; members added since are admitted after it
            creation = link.creation()
            items.append(self._sign(0, coordinator_name(link.me), creation))
            registered = {m.name: m.key for m in creation.members}
        items.extend(self._admissions(size + len(items), [*opened.selected, link.me], registered, ask))
        items.append(self._sign(size + len(items), link.me, opened))
        positions = assign_positions(
            {n: i.entry.seq for n, i in statements.items()}, start=size + len(items), order=link.member_id
        )
        by_position = {seq: self._at(statements[name], seq, ask) for name, seq in positions.items()}
        items.extend(by_position[seq] for seq in sorted(by_position))
        for body in after:
            items.append(self._sign(size + len(items), link.me, body))
        self._dry_run(items)
        records = [i.record for i in items]
        self._built = (tuple(records), items)
        return records

    def _registered(self) -> tuple[int, dict[str, bytes]]:
        """The log's size and its registered members (a snapshot: no call waits for the ledger's thread)."""
        link = self._link
        state = link.state()
        if state is None and link.store.size:
            raise BlockRefused("this ledger does not replay, it cannot take entries")
        return (state.size, state.members()) if state is not None else (0, {})

    def _sign(self, seq: int, author: str, body: Body) -> SignedEntry:
        link = self._link
        return sign_entry(Entry(link.federation, seq, author, link.public, body), link.key)

    def _admissions(
        self, size: int, taking_part: Sequence[str], registered: Mapping[str, bytes], ask: Signer
    ) -> list[SignedEntry]:
        """``member_admitted`` for the members taking part that are not registered (see the module docstring)."""
        link = self._link
        manifest = link.keys()
        new = member_order({n for n in taking_part if n not in registered}, link.member_id)
        if not new:
            return []
        for name in new:
            if name not in manifest:
                raise BlockRefused(f"{name} takes part but is not listed in the manifest")
        bodies = [MemberAdmitted(n, manifest[n], "listed in the manifest") for n in new]
        if link.me in registered:  # the founding member admits as the coordinator (its key), as in simulation
            founder = link.coordinator is None or link.coordinator.member == link.me  # None: this block creates it
            author = coordinator_name(link.me) if founder else link.me
            return [self._sign(size + i, author, body) for i, body in enumerate(bodies)]
        problems = []
        for admitter in member_order([n for n in taking_part if n in registered], link.member_id):
            try:
                return [
                    self._signed_by(Entry(link.federation, size + i, admitter, registered[admitter], body), ask)
                    for i, body in enumerate(bodies)
                ]
            except VerificationError as exc:
                problems.append(f"{admitter}: {exc}")
        raise BlockRefused(
            f"{new[0]} is not registered on the ledger and no registered member of the round signed its admission"
            + (f" ({'; '.join(problems)})" if problems else "")
        )

    def _at(self, item: SignedEntry, seq: int, ask: Signer) -> SignedEntry:
        """A member's statement at position ``seq`` (signed again by its author if it moved)."""
        if item.entry.seq == seq:
            return item
        entry = replace(item.entry, seq=seq)
        if entry.author == self._link.me:
            return SignedEntry.from_record(self._link.statements.sign_again(entry))
        return self._signed_by(entry, ask)

    def _signed_by(self, entry: Entry, ask: Signer) -> SignedEntry:
        """``entry`` signed by its author, another member (asked over the network; the answer is checked)."""
        wanted = entry.encode()
        try:
            signed = SignedEntry.from_record(ask(entry.author, wanted))
        except EntryError as exc:
            raise VerificationError(f"{entry.author} answered with a record that does not parse: {exc}") from None
        if signed.message != wanted:
            raise BlockRefused(f"{entry.author} signed another entry than the one asked for")
        VerifyKey.from_raw(entry.key).verify(signed.message, signed.signature)
        return signed

    def _dry_run(self, items: Sequence[SignedEntry]) -> None:
        """Replay the rules over a block this node built (every signature in it was checked or made here) on
        a copy of the ledger's state (:meth:`~fedswarm.node.ledgerlink.LedgerLink.state`: readable from this
        thread; adopting the commit replays them again on the ledger's thread before anything is written)."""
        replica = self._link.replica
        if replica is not None:
            replica.check(items, signatures_checked=True)
            return
        state = LedgerState()
        for item in items:
            state.apply(item.entry)

    # another leader's block -----------------------------------------------------------------------
    def sign_admission(self, entry: Entry) -> bytes:
        """Sign an admission another leader asks this member for, if it is one this member would write.

        Raises
        ------
        VerificationError
            It is not this member's, the admitted member or its key is not the manifest's, it is registered
            already, this member is not, or the position is not after the local log.
        """
        link = self._link
        link.check_running()
        body = entry.body
        if not isinstance(body, MemberAdmitted) or (entry.author, entry.key, entry.federation) != (
            link.me,
            link.public,
            link.federation,
        ):
            raise VerificationError(f"{link.me} does not write entry {entry.seq} ({entry.kind} by {entry.author})")
        if link.keys().get(body.member) != body.key:
            raise VerificationError(f"{body.member} is not listed with that key in {link.me}'s manifest")
        size, registered = self._registered()
        if link.me not in registered or body.member in registered or entry.seq < size:
            raise VerificationError(
                f"{link.me} does not admit {body.member} at entry {entry.seq} (its log has {size} entries, "
                f"{body.member} {'is' if body.member in registered else 'is not'} registered)"
            )
        return sign_entry(entry, link.key).record

"""The ledger of a running node: what the daemon calls when it adopts, leads, receives and answers.

:class:`NodeLedger` builds the node's replica (:class:`~fedswarm.node.ledgerlink.LedgerLink`, in
``DATA/ledger``) from the spec and the startup kit, and its conversations with peers
(:class:`~fedswarm.node.ledger_peers.LedgerPeers`), routes the daemon's messages to the replica's parts
(statements, blocks, witness), and turns their refusals into the daemon's:

* a commit whose entries are refused is refused (``MessageRefused`` with the reason);
* an update whose entry does not describe it is refused;
* when the replica halts (a fork, or a local ledger edited while the node was down) the node refuses
  commits, assignments and leading, reports the alarm in its status and exits non-zero.

The daemon's steady state costs no extra call: a member's entry and its cosignature of its latest head
ride on its update, the leader's entries and the latest final checkpoint on the commit, and the member's
new cosignature comes back in its reply to a commit call. Only the job's last round adds one call per
member (to collect the last cosignatures and hand out the final checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from fedswarm.codec import tensors as tensor_codec
from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.ledger.entries import MemberKey
from fedswarm.node.ledger_block import GenesisFacts, config_digest
from fedswarm.node.ledger_peers import LedgerPeers
from fedswarm.node.ledgerlink import LedgerLink, parse_records
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.blobs import iter_file_chunks
from fedswarm.transport.envelope import MessageRefused, Verified

if TYPE_CHECKING:
    from fedswarm.node.daemon import NodeDaemon
    from fedswarm.node.kit import Manifest

__all__ = ["LEDGER_DIR", "NodeLedger"]

log = logging.getLogger("fedswarm.node")

LEDGER_DIR = "ledger"
"""The ledger's folder inside a node's data folder."""


class NodeLedger:
    """The ledger side of ``node``: its replica, and its ledger exchanges with peers."""

    def __init__(self, node: NodeDaemon) -> None:
        self.node = node
        self._manifest_keys: tuple[Manifest, dict[str, bytes], dict[str, bytes]] | None = None
        spec = node.spec
        manifest = node.kit.manifest
        genesis = GenesisFacts(
            spec_digest=node.job,
            population=node.roster.population,
            strategy=spec.strategy.name,
            initial_model=tensor_codec.digest(node.world.initial),
            config_digest=config_digest(spec),
            founders=tuple(MemberKey(e.name, e.verify_key().raw) for e in manifest.founders),
            quorum=spec.ledger.quorum,
        )
        every, rounds = spec.ledger.checkpoint_every, spec.federation.rounds
        self.link = LedgerLink(
            node.store.directory / LEDGER_DIR,
            me=node.me,
            key=node.kit.signing_key,
            federation=manifest.federation_id,
            genesis=genesis,
            keys=self._keys,
            member_id=lambda name: node.roster.id_of(name),  # the roster is replaced when the kit is reloaded
            blobs=node.store,
            due=lambda rnd: rnd % every == 0 or rnd >= rounds or node.stopped_early is not None,
            retain=spec.ledger.retain_updates,
            on_alarm=self._on_alarm,
            revoked_keys=self._revoked_keys,
        )
        self.peers = LedgerPeers(
            self.link, node.network, peers=lambda: [n for n in sorted(node.roster.current) if n != node.me]
        )
        node.worker.sign_header = self.link.statements.sign
        node.network.on_ack = self._on_ack

    def _keys(self) -> Mapping[str, bytes]:
        """The manifest's current members and their keys."""
        return self._parsed_keys()[1]

    def _revoked_keys(self) -> Mapping[str, bytes]:
        """The manifest's revoked members and the keys they were listed with (they may have been admitted)."""
        return self._parsed_keys()[2]

    def _parsed_keys(self) -> tuple[Manifest, dict[str, bytes], dict[str, bytes]]:
        """The manifest, its current and its revoked members' keys (parsed once per manifest: a reloaded kit
        brings a new one)."""
        manifest = self.node.kit.manifest
        cached = self._manifest_keys
        if cached is None or cached[0] is not manifest:
            current = {e.name: e.verify_key().raw for e in manifest.members}
            revoked = {e.name: e.verify_key().raw for e in manifest.revoked}
            cached = self._manifest_keys = (manifest, current, revoked)
        return cached

    def _on_alarm(self, alarm: VerificationError) -> None:
        self.node.set_error(str(alarm))

    def _on_ack(self, peer: str, ack: pb.Ack) -> None:
        if ack.cosignature:
            try:
                self.link.witness.note(ack.cosignature, sender=peer)
            except Exception:  # the call's own outcome must not depend on the ledger's bookkeeping
                log.exception("ledger: the cosignature in %s's reply could not be taken", peer)

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Compare with the peers (catching up if they are ahead), then now and then."""
        self.peers.start()

    def stop(self) -> None:
        """Finish the ledger calls in flight and close the store."""
        self.peers.stop()
        self.link.close()

    @property
    def alarm(self) -> VerificationError | None:
        """Why the replica halted, if it did."""
        return self.link.alarm

    def refusal(self, what: str) -> MessageRefused | None:
        """The refusal of ``what`` while the replica is halted, else ``None``."""
        alarm = self.link.alarm
        return None if alarm is None else MessageRefused("unexpected", f"{self.node.me} refuses {what}: {alarm}")

    # commits --------------------------------------------------------------------------------------
    def adopt(self, envelope: pb.Envelope, body: pb.Commit, *, leader: str, source: str | None) -> None:
        """Append the commit's entries (fetching what this ledger lacks from ``source`` first).

        Raises
        ------
        VerificationError
            The entries are refused, or the records before them could not be fetched.
        """
        link = self.link
        items = link.blocks.built(body.ledger_entries)  # this node's own block: parsed and checked already
        built = items is not None
        if items is None:
            items = parse_records(body.ledger_entries, f"ledger entries of the commit of round {envelope.round}")
        if not items:
            raise VerificationError(f"the commit of round {envelope.round} by {leader} carries no ledger entries")
        first = items[0].entry.seq
        if source is not None and source != self.node.me and first > link.size:
            self.peers.sync(source, upto=first)
        link.adopt(envelope, body, items, leader=leader, built=built)

    def adopted(self, leader: str) -> None:
        """After a commit is adopted: at the end of the job, ask its leader for the final checkpoint."""
        if self.node.finished and leader != self.node.me:
            self.peers.request_final(leader)

    def open_object(self, digest: str) -> tuple[int, Iterator[bytes]] | None:
        """Size and chunks of a model the ledger stores (peers catching up fetch them), or ``None``."""
        try:
            path = self.link.object_path(digest)
        except ValueError:
            return None
        if not path.is_file():
            return None
        return path.stat().st_size, iter_file_chunks(path, chunk_bytes=self.node.settings.chunk_bytes)

    def cosignature(self) -> bytes:
        """This member's cosignature of its latest head (for the reply to a commit)."""
        return self.link.witness.cosignature()

    def add_entries(self, body: pb.Commit, outcome: RoundOutcome, digests: Mapping[int, str]) -> bool:
        """Put the round's entries and the latest final checkpoint into the leader's commit ``body``.

        Returns ``False`` (logged, and the round is not committed) when the round cannot be recorded.
        """
        node = self.node
        try:
            records = self.link.blocks.block(
                outcome,
                digests=digests,
                names=node.roster.name_of,
                strategy=node.spec.strategy.name,
                previous=body.previous_digest,
                model=body.model_digest,
                ask=self.peers.ask_to_sign,
            )
        except FedswarmError as exc:
            log.error("round %d cannot be recorded on the ledger: %s", outcome.round, exc)
            node.set_error(f"round {outcome.round}: ledger: {exc}")
            return False
        body.ledger_entries.extend(records)
        body.checkpoint = self.link.witness.commit_checkpoint()
        return True

    # messages -------------------------------------------------------------------------------------
    def note_update(self, message: Verified, header: pb.UpdateHeader, data: bytes | bytearray | None) -> None:
        """Check the entry that came with an update.

        Raises
        ------
        MessageRefused
            It is missing or does not describe the update.
        """
        if header.ledger_cosignature:
            self.link.witness.note(header.ledger_cosignature, sender=message.sender)
        try:
            self.link.statements.check(message.sender, message.round, header, data)
        except VerificationError as exc:
            raise MessageRefused("unexpected", f"ledger: {exc}") from None
        except FedswarmError as exc:  # bytes that are not an update
            raise MessageRefused("malformed", f"update from {message.sender}: {exc}") from None

    def serve(self, message: Verified, request: pb.CheckpointRequest, *, wait: float | None) -> pb.CheckpointReply:
        """Answer a ``Checkpoint`` call."""
        return self.peers.serve(message.sender, request, wait=wait)

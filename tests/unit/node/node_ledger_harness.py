"""In-process node ledgers for the unit tests: members sign their updates, a leader builds the round's block,
every node adopts it the way :class:`fedswarm.node.ledger_node.NodeLedger` does (no network: the calls a
leader makes to its members are direct calls)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedswarm.codec import tensors
from fedswarm.core.errors import VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.entries import MemberKey
from fedswarm.ledger.store import LedgerStore
from fedswarm.node.ledger_block import GenesisFacts
from fedswarm.node.ledger_peers import sign_asked
from fedswarm.node.ledger_views import catch_up, missing_models
from fedswarm.node.ledgerlink import LedgerLink, parse_records
from fedswarm.node.persist import NodeStore
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.wire import encode_update, sha256_hex

FED = "ab" * 16


def key_of(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


def model(value: float) -> bytes:
    return tensors.encode(Parameters({"w": np.full(4, value, dtype=np.float32)}))


INITIAL = model(0.0)


def update_row(name: str, rnd: int) -> np.ndarray:
    return np.full(4, 0.1 * (int(name[-1]) + 1) + rnd, dtype=np.float64)


@dataclass
class Node:
    name: str
    link: LedgerLink
    blobs: NodeStore
    alarms: list[VerificationError] = field(default_factory=list)


@dataclass
class Round:
    envelope: pb.Envelope
    body: pb.Commit
    headers: dict[str, pb.UpdateHeader]
    data: dict[str, bytes]


class Federation:
    """Nodes named ``names`` (ids in name order) whose manifest is :attr:`manifest` (change it to add members)."""

    def __init__(self, tmp: Path, names: tuple[str, ...], *, retain: bool = True) -> None:
        self.tmp = tmp
        self.names = list(names)
        self.manifest = {n: key_of(n).public_key().raw for n in names}
        self.genesis = GenesisFacts(
            spec_digest="11" * 32,
            population=len(names),
            strategy="fedavg",
            initial_model=sha256_hex(INITIAL),
            config_digest="22" * 32,
            founders=tuple(MemberKey(n, key) for n, key in self.manifest.items()),
        )
        self.retain = retain
        self.nodes: dict[str, Node] = {}
        for name in names:
            self.start(name)

    def start(self, name: str) -> Node:
        """Start (or restart, on its folder) the node of ``name``."""
        if name not in self.names:
            self.names.append(name)
        blobs = NodeStore(self.tmp / name)
        blobs.put(INITIAL)
        alarms: list[VerificationError] = []
        link = LedgerLink(
            self.tmp / name / "ledger", me=name, key=key_of(name), federation=FED, genesis=self.genesis,
            keys=lambda: self.manifest, member_id=self.names.index, blobs=blobs, due=lambda rnd: True,
            retain=self.retain, on_alarm=alarms.append,
        )  # fmt: skip
        node = self.nodes[name] = Node(name, link, blobs, alarms)
        return node

    def admit_to_manifest(self, name: str) -> None:
        """The operator adds ``name`` to the manifest (every node sees it)."""
        self.manifest[name] = key_of(name).public_key().raw

    def close(self) -> None:
        for node in self.nodes.values():
            node.link.close()

    def catch_up(self, name: str, source: str) -> None:
        """``name`` fetches the records (and the models they name) it lacks from ``source``, naming it."""
        link, peer = self.nodes[name].link, self.nodes[source].link
        with LedgerStore(peer.folder, readonly=True) as store:
            items = parse_records([r for _, r in store.records(link.size)], f"records from {source}")
        for digest in link.run(lambda: missing_models(link, items)):
            link.put_object(peer.object_path(digest).read_bytes())
        catch_up(link, items, peer=source)

    def ask(self, member: str, entry: bytes) -> bytes:
        return sign_asked(self.nodes[member].link, entry)

    def round(
        self,
        rnd: int,
        *,
        leader: str,
        previous: str,
        senders: tuple[str, ...] | None = None,
        selected: tuple[str, ...] | None = None,
        secure: bool = False,
    ) -> Round:
        """Members sign their updates, the leader checks them and builds the block; nobody adopts yet.

        ``selected`` (default: the senders and the leader) minus ``senders`` dropped out; ``secure``: the
        updates came as a secure sum (no update in the clear, no member statement)."""
        senders = tuple(self.names) if senders is None else senders
        selected = tuple(sorted({*senders, leader})) if selected is None else selected
        headers: dict[str, pb.UpdateHeader] = {}
        datas: dict[str, bytes] = {}
        digests: dict[int, str] = {}
        for name in () if secure else senders:
            data = encode_update(update_row(name, rnd))
            header = pb.UpdateHeader(
                base_digest=previous, update_digest=sha256_hex(data), update_size=len(data),
                num_examples=10 + self.names.index(name),
            )  # fmt: skip
            self.nodes[name].link.statements.sign(rnd, header, data)
            if header.ledger_cosignature:
                self.nodes[leader].link.witness.note(header.ledger_cosignature, sender=name, wait=True)
            self.nodes[leader].link.statements.check(name, rnd, header, data)
            headers[name], datas[name] = header, data
            digests[self.names.index(name)] = header.update_digest
        new_model = model(float(rnd))
        for node in self.nodes.values():
            node.blobs.put(new_model)
        accepted = [self.names.index(n) for n in senders]
        ids = sorted(self.names.index(n) for n in selected)
        outcome = RoundOutcome(
            round=rnd, selected=np.asarray(ids, dtype=np.int64), accepted=accepted,
            dropouts={i: "no reply" for i in ids if i not in accepted}, rejected={}, parameters=tensors.decode(new_model),
            updates=np.stack([update_row(self.names[i], rnd) for i in accepted])[: 1 if secure else None],
            weights=np.asarray([10.0 + i for i in accepted]), train_metrics={"loss": 0.5}, bytes_up=0, bytes_down=0,
            central=None, members_eval=None, seconds=0.0,
        )  # fmt: skip
        body = pb.Commit(
            previous_digest=previous,
            model_digest=sha256_hex(new_model),
            inputs=[pb.Input(member=self.names[m], update_digest=d, accepted=True) for m, d in sorted(digests.items())],
        )
        link = self.nodes[leader].link
        body.ledger_entries.extend(
            link.blocks.block(
                outcome, digests=digests, names=self.names.__getitem__, strategy="fedavg", previous=previous,
                model=body.model_digest, ask=self.ask,
            )
        )  # fmt: skip
        body.checkpoint = link.witness.commit_checkpoint()
        envelope = pb.Envelope(round=rnd, sender=leader, timestamp_ms=1_000 * rnd)
        return Round(envelope, body, headers, datas)

    def adopt(self, name: str, r: Round, *, leader: str) -> None:
        """``name`` adopts the round's commit as :meth:`fedswarm.node.ledger_node.NodeLedger.adopt` does."""
        link = self.nodes[name].link
        items = link.blocks.built(r.body.ledger_entries)
        built = items is not None
        if items is None:
            items = parse_records(r.body.ledger_entries, "commit")
        link.adopt(r.envelope, r.body, items, leader=leader, built=built)

    def adopt_all(self, r: Round, *, leader: str, among: tuple[str, ...] | None = None) -> None:
        """Every node of ``among`` adopts; their cosignatures reach the leader (as replies to the commit)."""
        among = tuple(self.nodes) if among is None else among
        for name in among:
            self.adopt(name, r, leader=leader)
        for name in among:
            node = self.nodes[name]
            node.link.run(lambda: None)  # the commit's checkpoint is checked in the background: wait for it
            cosignature = node.link.witness.cosignature()
            if name != leader and cosignature:
                self.nodes[leader].link.witness.note(cosignature, sender=name, wait=True)

    def rounds(self, plan: list[tuple[str, tuple[str, ...]]], *, previous: str | None = None, start: int = 1) -> str:
        """Run ``(leader, taking part)`` rounds from round ``start``; every node taking part adopts each."""
        previous = self.genesis.initial_model if previous is None else previous
        for offset, (leader, among) in enumerate(plan):
            r = self.round(start + offset, leader=leader, previous=previous, senders=among)
            self.adopt_all(r, leader=leader, among=among)
            previous = r.body.model_digest
        return previous


class RevokingFederation(Federation):
    """A :class:`Federation` whose manifest also keeps its revoked members (:meth:`revoke`)."""

    def __init__(self, tmp: Path, names: tuple[str, ...], *, retain: bool = True) -> None:
        self.revoked: dict[str, bytes] = {}
        super().__init__(tmp, names, retain=retain)

    def start(self, name: str) -> Node:
        node = super().start(name)
        node.link.revoked_keys = lambda: self.revoked
        return node

    def revoke(self, name: str) -> None:
        """The operator revokes ``name``: its entry moves from the members to the revoked (every node sees it)."""
        self.revoked[name] = self.manifest.pop(name)

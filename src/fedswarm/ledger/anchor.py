"""Anchor ledger checkpoints on an Ethereum-compatible chain, and check a ledger against its anchors.

The contract ``contracts/Checkpoints.vy`` (Vyper) records, per federation, a monotone sequence of
``(size, root)`` checkpoints and the members' Ed25519 keys. A federation's on-chain id is the Merkle leaf
hash of its ledger's first entry (``federation_created``), which names its spec, coordinator and keys.
The compiled ABI and bytecode are committed in ``contracts/Checkpoints.json`` (a test recompiles the
source with the ``vyper`` package and compares), so anchoring needs ``web3`` but no compiler.

Two targets:

* **embedded** (default): an in-process chain (``eth-tester`` with ``py-evm``). It lives only as long as
  the process, so :func:`anchor_ledger` saves the signed transactions it sent in ``LEDGER/anchors.json``
  and :func:`open_chain` replays them into a fresh embedded chain, which then holds the same contract
  state. This exercises the contract and every check end to end, but it proves nothing against someone
  who can rewrite the ledger folder: they can rewrite ``anchors.json`` too.
* **JSON-RPC** (``rpc="http://..."``): a chain that others hold. Then an anchored root is evidence that
  the log had that root when it was anchored, and a later copy that does not extend it is caught.
  Transactions are signed with the key in the environment variable ``FEDSWARM_EVM_KEY`` (hex) when set,
  else sent from the node's first unlocked account (development nodes).

:func:`verify_anchors` reads every anchored checkpoint from the chain (never from ``anchors.json``) and
checks that the local log has at least that many entries and the same root at that size, and that every
member key the chain registered is the key the log registered.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.ledger.entries import SignedEntry
from fedswarm.ledger.merkle import leaf_hash
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import LedgerStore, find_ledger

__all__ = [
    "ANCHORS_FILE",
    "ARTIFACT",
    "AnchorStatus",
    "Chain",
    "anchor_ledger",
    "contract_artifact",
    "federation_id",
    "member_id",
    "open_chain",
    "open_ledger_chain",
    "verify_anchors",
]

ANCHORS_FILE = "anchors.json"
ARTIFACT = Path(__file__).with_name("contracts") / "Checkpoints.json"
SOURCE = Path(__file__).with_name("contracts") / "Checkpoints.vy"
_FORMAT = "fedswarm/anchors/v1"
_BATCH = 128
_EMBEDDED = "embedded"


def contract_artifact() -> dict[str, Any]:
    """The committed ABI and bytecode of the anchor contract."""
    data: dict[str, Any] = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    return data


def federation_id(store: LedgerStore) -> bytes:
    """On-chain id of a federation: the leaf hash of its ledger's first entry.

    Raises
    ------
    VerificationError
        If the ledger is empty.
    """
    if store.size == 0:
        raise VerificationError(f"{store.folder}: the ledger is empty, there is nothing to anchor")
    return leaf_hash(store.record(0))


def member_id(name: str) -> bytes:
    """On-chain id of a member: SHA-256 of its UTF-8 name."""
    return hashlib.sha256(name.encode("utf-8")).digest()


def _web3() -> Any:
    try:
        import web3
    except ImportError:
        raise ConfigurationError("anchoring needs web3: install fedswarm[evm]") from None
    return web3


@dataclass
class Chain:
    """A connection to a chain and the account that sends transactions.

    Build it with :func:`open_chain`. ``transactions`` lists the raw signed transactions sent on an
    embedded chain (replayed when the chain is reopened).
    """

    w3: Any
    account: str
    key: Any | None
    rpc: str | None
    transactions: list[str] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        """Whether this is the in-process chain."""
        return self.rpc is None

    @property
    def chain_id(self) -> int:
        """The chain's id."""
        return int(self.w3.eth.chain_id)

    def send(self, call: Any) -> Any:
        """Send a contract call or constructor as a transaction; return its receipt.

        Raises
        ------
        VerificationError
            If the transaction reverts (the contract's reason is in the message).
        """
        try:
            if self.key is None:
                tx_hash = call.transact({"from": self.account})
            else:
                from eth_account import Account

                tx = call.build_transaction(
                    {
                        "from": self.account,
                        "nonce": self.w3.eth.get_transaction_count(self.account),
                        "chainId": self.chain_id,
                    }
                )
                signed = Account.sign_transaction(tx, self.key)
                raw = bytes(signed.raw_transaction)
                tx_hash = self.w3.eth.send_raw_transaction(raw)
                if self.embedded:
                    self.transactions.append(raw.hex())
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        except (ValueError, RuntimeError) as exc:
            raise VerificationError(f"transaction refused by the chain: {exc}") from None
        except Exception as exc:
            if type(exc).__name__ in ("TransactionFailed", "ContractLogicError"):
                raise VerificationError(f"transaction refused by the chain: {exc}") from None
            raise
        if int(receipt["status"]) != 1:
            raise VerificationError(f"transaction {bytes(tx_hash).hex()} failed on chain")
        return receipt

    def contract(self, address: str) -> Any:
        """The anchor contract at ``address``."""
        return self.w3.eth.contract(address=self.w3.to_checksum_address(address), abi=contract_artifact()["abi"])

    def deploy(self) -> str:
        """Deploy the anchor contract; return its address."""
        artifact = contract_artifact()
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self.send(factory.constructor())
        return str(receipt["contractAddress"])


def open_chain(rpc: str | None = None, *, replay: Sequence[str] = ()) -> Chain:
    """Connect to the chain at ``rpc`` (JSON-RPC over HTTP), or start an embedded chain.

    Parameters
    ----------
    rpc
        URL of a JSON-RPC endpoint; ``None`` for the embedded chain.
    replay
        Raw signed transactions (hex) to replay into a new embedded chain first.

    Raises
    ------
    ConfigurationError
        If ``web3`` (or, for the embedded chain, ``eth-tester``/``py-evm``) is missing, or the endpoint
        cannot be reached.
    VerificationError
        If a replayed transaction fails.
    """
    web3 = _web3()
    if rpc is None:
        try:
            from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigurationError("the embedded chain needs eth-tester and py-evm: install fedswarm[evm]") from None
        backend = PyEVMBackend()
        w3 = web3.Web3(web3.EthereumTesterProvider(EthereumTester(backend)))
        key = backend.account_keys[0]
        chain = Chain(w3=w3, account=w3.eth.accounts[0], key=key, rpc=None)
        for raw in replay:
            try:
                receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(bytes.fromhex(raw)))
            except Exception as exc:
                raise VerificationError(f"replaying the embedded chain's transactions failed: {exc}") from None
            if int(receipt["status"]) != 1:
                raise VerificationError("replaying the embedded chain's transactions failed: a transaction reverted")
            chain.transactions.append(raw)
        return chain
    w3 = web3.Web3(web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        raise ConfigurationError(f"cannot reach the JSON-RPC endpoint {rpc}")
    secret = os.environ.get("FEDSWARM_EVM_KEY")
    if secret:
        from eth_account import Account

        account = Account.from_key(secret)
        return Chain(w3=w3, account=str(account.address), key=account.key, rpc=rpc)
    accounts = w3.eth.accounts
    if not accounts:
        raise ConfigurationError(f"{rpc} has no unlocked account: set FEDSWARM_EVM_KEY to a funded account's key")
    return Chain(w3=w3, account=str(accounts[0]), key=None, rpc=rpc)


def _load_receipts(folder: Path) -> dict[str, Any]:
    path = folder / ANCHORS_FILE
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VerificationError(f"{path} is not valid JSON: {exc}") from None
    if data.get("format") != _FORMAT:
        raise VerificationError(f"{path}: format {data.get('format')!r} is not {_FORMAT!r}")
    return data


def _target_key(rpc: str | None) -> str:
    return _EMBEDDED if rpc is None else rpc


def open_ledger_chain(path: Path, *, rpc: str | None = None) -> Chain:
    """Open the chain a ledger was anchored on: for the embedded chain, replay its saved transactions."""
    folder = find_ledger(path)
    target = _load_receipts(folder).get("targets", {}).get(_target_key(rpc), {})
    return open_chain(rpc, replay=target.get("transactions", []) if rpc is None else ())


def _registry(store: LedgerStore) -> dict[str, bytes]:
    state = LedgerState()
    for _seq, record in store.records():
        state.apply(SignedEntry.from_record(record).entry)
    return {name: key for name, key in state.keys.items() if name not in state.removed}


@dataclass(frozen=True, slots=True)
class AnchorStatus:
    """One anchored checkpoint and whether the local log matches it."""

    index: int
    size: int
    root: str
    time: int


def _check_anchored(instance: Any, fid: bytes, store: LedgerStore, count: int) -> list[AnchorStatus]:
    """Check the local log against the first ``count`` anchored checkpoints (see :func:`verify_anchors`)."""
    statuses = []
    for index in range(count):
        size, root, when = instance.functions.anchor_at(fid, index).call()
        size, root = int(size), bytes(root)
        if size > store.size:
            raise VerificationError(
                f"anchored checkpoint #{index} covers {size} entries, the local log has only {store.size}"
            )
        local = store.root(size)
        if local != root:
            raise VerificationError(
                f"anchored checkpoint #{index} (size {size}) does not match the local log: anchored root "
                f"{root.hex()}, local root {local.hex()}"
            )
        statuses.append(AnchorStatus(index, size, root.hex(), int(when)))
    return statuses


def anchor_ledger(path: Path, *, chain: Chain, contract: str | None = None) -> AnchorStatus:
    """Anchor the ledger's latest checkpoint (and register its members) on ``chain``.

    The contract is taken from ``contract``, else from ``anchors.json`` for this target, else deployed.
    Run :func:`~fedswarm.ledger.verify.verify_ledger` first: this function anchors what is there.

    Raises
    ------
    VerificationError
        If the ledger has no checkpoint, contradicts a checkpoint anchored earlier, another account
        operates the federation on this contract, or the chain refuses a transaction.
    """
    folder = find_ledger(path)
    receipts = _load_receipts(folder)
    target_name = _target_key(chain.rpc)
    target = receipts.get("targets", {}).get(target_name, {})
    store = LedgerStore(folder, readonly=True)
    try:
        checkpoint = store.latest_checkpoint()
        if checkpoint is None:
            raise VerificationError(f"{folder}: the ledger has no checkpoint to anchor")
        fid = federation_id(store)
        registry = _registry(store)
    finally:
        store.close()
    address = contract or target.get("contract") or chain.deploy()
    instance = chain.contract(address)
    operator = instance.functions.operator(fid).call()
    if int(operator, 16) == 0:
        chain.send(instance.functions.register_federation(fid))
    elif chain.w3.to_checksum_address(operator) != chain.w3.to_checksum_address(chain.account):
        raise VerificationError(
            f"federation {fid.hex()} is operated by {operator} on {address}, not by {chain.account}"
        )
    pending = [
        (member_id(n), k)
        for n, k in sorted(registry.items())
        if instance.functions.member_key(fid, member_id(n)).call() != k
    ]
    for start in range(0, len(pending), _BATCH):
        batch = pending[start : start + _BATCH]
        chain.send(instance.functions.register_members(fid, [m for m, _ in batch], [k for _, k in batch]))
    count = int(instance.functions.anchor_count(fid).call())
    with LedgerStore(folder, readonly=True) as store:
        _check_anchored(instance, fid, store, count)  # never anchor a history that contradicts earlier anchors
    head = checkpoint.head
    last = instance.functions.anchor_at(fid, count - 1).call() if count else None
    if last is None or (int(last[0]), bytes(last[1])) != (head.size, head.root):
        chain.send(instance.functions.anchor(fid, head.size, head.root))
        count += 1
    size, root, when = instance.functions.anchor_at(fid, count - 1).call()
    status = AnchorStatus(count - 1, int(size), bytes(root).hex(), int(when))
    anchors = list(target.get("anchors", []))
    if not anchors or anchors[-1]["index"] != status.index:
        anchors.append({"index": status.index, "size": status.size, "root": status.root})
    targets = dict(receipts.get("targets", {}))
    targets[target_name] = {
        "chain_id": chain.chain_id,
        "contract": str(address),
        "federation_id": fid.hex(),
        "anchors": anchors,
        "transactions": chain.transactions if chain.embedded else [],
    }
    out = folder / ANCHORS_FILE
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"format": _FORMAT, "targets": targets}, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return status


def verify_anchors(path: Path, *, chain: Chain, contract: str | None = None) -> list[AnchorStatus]:
    """Check the local ledger against every checkpoint anchored for its federation on ``chain``.

    Raises
    ------
    VerificationError
        If nothing is anchored, an anchored size exceeds the local log, an anchored root is not the
        local root at that size, or a member key on chain differs from the log's.
    """
    folder = find_ledger(path)
    target = _load_receipts(folder).get("targets", {}).get(_target_key(chain.rpc), {})
    address = contract or target.get("contract")
    if not address:
        raise VerificationError(
            f"{folder}: no anchor contract known for {_target_key(chain.rpc)} (run `fedswarm ledger anchor` first, "
            "or pass --contract)"
        )
    instance = chain.contract(address)
    store = LedgerStore(folder, readonly=True)
    try:
        fid = federation_id(store)
        count = int(instance.functions.anchor_count(fid).call())
        if count == 0:
            raise VerificationError(f"nothing is anchored for federation {fid.hex()} on contract {address}")
        statuses = _check_anchored(instance, fid, store, count)
        for name, key in sorted(_registry(store).items()):
            on_chain = bytes(instance.functions.member_key(fid, member_id(name)).call())
            if on_chain != bytes(32) and on_chain != key:
                raise VerificationError(f"member {name}: the key anchored on chain is not the key in the local log")
        return statuses
    finally:
        store.close()

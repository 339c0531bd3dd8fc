"""Anchoring over JSON-RPC on a chain another process holds: Foundry's anvil (installed by `make test`).

The embedded chain (eth-tester with py-evm) is tested in tests/unit/ledger/test_anchor.py; here the same
contract is deployed and called through ``--rpc`` over HTTP on loopback, both with the node's unlocked
account and with a key given in ``FEDSWARM_EVM_KEY`` (signed raw transactions).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("web3")
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.anchor import ANCHORS_FILE
from fedswarm.node.up import free_ports

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from ledger_fixtures import build_ledger

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANVIL = ROOT / "tools" / "evm" / "node_modules" / ".bin" / "anvil"
# anvil's second default development account (derived from its public test mnemonic; holds test ether only)
DEV_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

runner = CliRunner()


def _rpc(url: str, method: str) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=2) as reply:
        return json.loads(reply.read())["result"]


@pytest.fixture()
def chain_url(tmp_path: Path) -> Iterator[str]:
    if not ANVIL.exists():
        pytest.fail(f"{ANVIL} is missing: `make test` installs it (npm ci --prefix tools/evm)")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "anvil.log", "wb")
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _rpc(url, "eth_chainId")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"anvil did not start: {(tmp_path / 'anvil.log').read_text(errors='replace')}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _cli(*args: str, key: str | None = None) -> tuple[int, str]:
    env = {"FEDSWARM_EVM_KEY": key} if key else {}
    saved = os.environ.pop("FEDSWARM_EVM_KEY", None)
    try:
        result = runner.invoke(app, list(args), env=env)
    finally:
        if saved is not None:
            os.environ["FEDSWARM_EVM_KEY"] = saved
    return result.exit_code, result.output


def _json(out: str) -> dict[str, Any]:
    value = json.loads(out[out.index("{") :])
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("key", [None, DEV_KEY], ids=["unlocked-account", "signed-raw-transactions"])
def test_anchor_and_verify_over_json_rpc(tmp_path: Path, chain_url: str, key: str | None) -> None:
    honest, _ = build_ledger(tmp_path / "honest", rounds=2, members=3, accuracies=[0.5, 0.6])
    code, out = _cli("ledger", "anchor", str(honest), "--rpc", chain_url, "--json", key=key)
    assert code == 0, out
    anchored = _json(out)
    assert anchored["target"] == chain_url and anchored["chain_id"] == int(str(_rpc(chain_url, "eth_chainId")), 16)
    assert anchored["index"] == 0 and anchored["size"] > 0
    receipts = json.loads((honest / ANCHORS_FILE).read_text())
    contract = receipts["targets"][chain_url]["contract"]
    assert "transactions" not in receipts["targets"][chain_url] or not receipts["targets"][chain_url]["transactions"]

    code, out = _cli("ledger", "verify", str(honest), "--anchored", "--rpc", chain_url, "--json", key=key)
    assert code == 0, out
    assert _json(out)["anchors"][0]["root"] == anchored["root"]

    # A rewritten history (re-signed with the public simulation keys, same federation id) verifies on its
    # own but not against the root the chain holds, and cannot be anchored over it.
    forged, _ = build_ledger(tmp_path / "forged", rounds=2, members=3, accuracies=[0.5, 0.99])
    shutil.copy(honest / ANCHORS_FILE, forged / ANCHORS_FILE)
    code, out = _cli("ledger", "verify", str(forged), key=key)
    assert code == 0, out
    code, out = _cli("ledger", "verify", str(forged), "--anchored", "--rpc", chain_url, key=key)
    assert code != 0 and "does not match the local log" in out, out
    code, out = _cli("ledger", "anchor", str(forged), "--rpc", chain_url, "--contract", contract, key=key)
    assert code != 0 and "does not match the local log" in out, out


def test_an_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "a", rounds=1, members=2)
    (port,) = free_ports(1)
    code, out = _cli("ledger", "anchor", str(folder), "--rpc", f"http://127.0.0.1:{port}")
    assert code != 0 and f"cannot reach the JSON-RPC endpoint http://127.0.0.1:{port}" in out, out

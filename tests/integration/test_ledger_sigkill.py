"""A writer killed with SIGKILL in the middle of appending leaves a ledger that verifies and can go on."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedswarm.ledger.store import DB_NAME
from fedswarm.ledger.verify import verify_ledger

pytestmark = pytest.mark.integration

WRITER = r"""
import sys
from pathlib import Path
import numpy as np
from fedswarm.core.parameters import Parameters
from fedswarm.ledger.checkpoint import TreeHead, cosign, sign_tree_head
from fedswarm.ledger.entries import EvaluationReported, FederationCreated, MemberKey
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import DB_NAME, LedgerStore
from fedswarm.ledger.writer import LedgerWriter

folder = Path(sys.argv[1])
keys = SimulationKeys(0)
members = ["m0", "m1", "m2"]
fresh = not (folder / DB_NAME).exists()
store = LedgerStore(folder, create=fresh, federation="kill")
model = Parameters({"w": np.arange(4, dtype=np.float64)})
initial = store.objects.put_parameters(model)
writer = LedgerWriter(store, batch=25)
if fresh:
    created = FederationCreated("0" * 64, 3, tuple(MemberKey(m, keys.member(m).public_key().raw) for m in members), "fedavg", initial)
    writer.add(created, author="coordinator", key=keys.coordinator())
    writer.flush()
print("ready", flush=True)
step = 0
while True:
    step += 1
    extra = store.objects.put_parameters(Parameters({"w": np.full(4, float(step))}))
    for i in range(25):
        body = EvaluationReported(0, initial, "central", 0, {"accuracy": (step * 25 + i) % 1000 / 1000, "extra": len(extra)})
        writer.add(body, author="coordinator", key=keys.coordinator())
    if step % 4 == 0:
        head = TreeHead("kill", store.size, store.root(), step)
        checkpoint = sign_tree_head(head, signer="coordinator", key=keys.coordinator())
        store.add_checkpoint(checkpoint.with_cosignatures([cosign(checkpoint, member=m, key=keys.member(m)) for m in members]))
"""


def _count(folder: Path) -> int:
    if not (folder / DB_NAME).exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _run_and_kill(folder: Path, *, at_least: int, extra_delay: float) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready", process.stderr.read() if process.stderr else ""
        deadline = time.monotonic() + 60
        while _count(folder) < at_least:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the writer did not append in time"
            time.sleep(0.01)
        time.sleep(extra_delay)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_sigkill_during_appends_leaves_a_verifiable_log(tmp_path: Path) -> None:
    folder = tmp_path / "ledger"
    sizes: list[int] = []
    for cycle, delay in enumerate([0.0, 0.013, 0.037, 0.11]):
        _run_and_kill(folder, at_least=(sizes[-1] if sizes else 0) + 200, extra_delay=delay)
        report = verify_ledger(folder)
        assert report.entries > (sizes[-1] if sizes else 0), f"cycle {cycle} appended nothing"
        assert len(report.checkpoints) >= 1
        sizes.append(report.entries)
    assert sizes == sorted(sizes)

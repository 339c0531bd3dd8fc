"""``fedswarm ledger`` end to end on a real ``fedswarm simulate`` run directory, then altered byte by byte."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.store import DB_NAME, SCHEMA, TABLES
from fedswarm.ledger.verify import verify_ledger

FEDSWARM = Path(sys.executable).with_name("fedswarm")

SPEC = """
[federation]
name = "clinics"
members = 4
rounds = 4
seed = 5

[data]
dataset = "breast_cancer"
partition = "dirichlet"
alpha = 0.5
min_samples = 20

[training]
epochs = 1
batch_size = 16
learning_rate = 0.1

[strategy]
name = "fedavg"
fraction = 0.75
min_members = 2

[baselines]
centralized = false
local_only = false

[ledger]
checkpoint_every = 2
"""


@functools.cache
def _prefix() -> tuple[str, ...]:
    """``fedswarm ledger``, or the sub-app's module when the main command does not list it (yet)."""
    probe = subprocess.run([str(FEDSWARM), "ledger", "--help"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return (str(FEDSWARM), "ledger")
    code = "from fedswarm.cli.ledger import ledger_app; ledger_app(prog_name='fedswarm ledger')"
    return (sys.executable, "-c", code)


def _ledger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_prefix(), *args], capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ledger-e2e")
    (base / "spec.toml").write_text(SPEC, encoding="utf-8")
    done = subprocess.run(
        [str(FEDSWARM), "simulate", str(base / "spec.toml"), "--out", str(base / "run"), "--quiet", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return base / "run"


def test_verify_show_prove_lineage_blame_export(run_dir: Path, tmp_path: Path) -> None:
    done = _ledger("verify", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["rounds"] == 4 and report["federation"] == "clinics"
    assert report["final_checkpoints"] == report["checkpoints"] == 2 and report["unwitnessed"] == 0

    shown = _ledger("show", str(run_dir), "--round", "2")
    assert shown.returncode == 0 and "round_opened" in shown.stdout and "aggregate_committed" in shown.stdout
    assert all(" round 2" in line for line in shown.stdout.splitlines())

    proof_file = tmp_path / "proof.json"
    assert _ledger("prove", str(run_dir), "--entry", "3", "--out", str(proof_file)).returncode == 0
    proof = json.loads(proof_file.read_text())
    assert proof["index"] == 3 and proof["size"] == report["entries"] and proof["checkpoint"]["size"] == proof["size"]
    ok = _ledger("check-proof", str(proof_file), "--root", report["root"])
    assert ok.returncode == 0 and "OK: entry 3" in ok.stdout
    wrong_root = ("0" if report["root"][0] != "0" else "1") + report["root"][1:]
    bad = _ledger("check-proof", str(proof_file), "--root", wrong_root)
    assert bad.returncode == 3 and "root mismatch" in bad.stderr

    summary = json.loads((run_dir / "summary.json").read_text())
    lineage = _ledger("lineage", str(run_dir), "--model", summary["final_model_digest"][:12], "--json")
    assert lineage.returncode == 0, lineage.stderr
    steps = json.loads(lineage.stdout)["steps"]
    assert [s["round"] for s in steps] == [1, 2, 3, 4] and steps[-1]["model"] == summary["final_model_digest"]

    blame = _ledger("blame", str(run_dir), "--metric", "accuracy", "--json")
    assert blame.returncode == 0, blame.stderr
    blamed = json.loads(blame.stdout)
    assert blamed["round"] in (2, 3, 4) and blamed["contributors"] and blamed["contributors"][0]["retained"]

    html_file = tmp_path / "report.html"
    assert _ledger("export", str(run_dir), "--format", "html", "--out", str(html_file)).returncode == 0
    assert "Verified" in html_file.read_text()
    exported = _ledger("export", str(run_dir), "--format", "json")
    assert json.loads(exported.stdout)["verification"]["ok"]


def test_anchor_and_verify_anchored(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("web3")
    pytest.importorskip("eth_tester")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    anchored = _ledger("anchor", str(copy))
    assert anchored.returncode == 0, anchored.stderr
    assert "anchored checkpoint #0" in anchored.stdout
    verified = _ledger("verify", str(copy), "--anchored")
    assert verified.returncode == 0, verified.stderr
    assert "consistent with 1 anchored checkpoint" in verified.stdout


def _logical_content(folder: Path) -> tuple[object, ...] | None:
    """Every row of every ledger table (packed objects included) and every object file, or None if the
    database cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True)
        try:
            # NOT INDEXED: read the tables themselves, not the name index of the meta table
            rows = tuple(tuple(conn.execute(f"SELECT * FROM {table} NOT INDEXED").fetchall()) for table in TABLES)
            schema = tuple(conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall())
        finally:
            conn.close()
    except (sqlite3.Error, UnicodeDecodeError):  # a text column damaged into invalid UTF-8 is unreadable too
        return None
    objects = tuple(
        (str(p.relative_to(folder)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted((folder / "objects").rglob("*"))
        if p.is_file()
    )
    return rows, schema, objects


def _difference(before: tuple[object, ...], after: tuple[object, ...] | None) -> str:
    if after is None:
        return "unreadable"
    names = [*TABLES, "schema", "object files"]
    flat_before = [*before[0], before[1], before[2]]  # type: ignore[misc]
    flat_after = [*after[0], after[1], after[2]]  # type: ignore[misc]
    for name, a, b in zip(names, flat_before, flat_after, strict=True):
        if a != b:
            rows = [(x, y) for x, y in zip(a, b, strict=False) if x != y]
            return f"{name}: {str(rows[:1])[:300]} ({len(a)} -> {len(b)} rows)"
    return "none"


def test_byte_alterations_of_a_simulated_ledger_are_all_caught(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ledger"
    shutil.copytree(run_dir / "ledger", copy)
    verify_ledger(copy)
    original = _logical_content(copy)
    assert original is not None
    db = copy / DB_NAME
    files = [db, *sorted((copy / "objects").rglob("*.safetensors"))]
    rng = random.Random(1234)
    targets = [(db, p) for p in rng.sample(range(db.stat().st_size), 250)]
    targets += [(f, rng.randrange(f.stat().st_size)) for f in rng.sample(files[1:], min(25, len(files) - 1))]
    caught = dead = 0
    for path, position in targets:
        data = path.read_bytes()
        changed = bytearray(data)
        changed[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(changed))
        try:
            content = _logical_content(copy)
            try:
                verify_ledger(copy)
            except VerificationError:
                caught += 1
            else:
                # Verification may only pass when the flipped bit held no ledger content (free space,
                # unused page bytes): every row, the schema and every object are exactly as before.
                assert content == original, (
                    f"{path.name} byte {position}: content changed but verify passed: {_difference(original, content)}"
                )
                dead += 1
        finally:
            path.write_bytes(data)
    verify_ledger(copy)
    assert caught >= 60, (caught, dead)


def test_the_cli_names_the_first_bad_entry(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    conn = sqlite3.connect(copy / "ledger" / DB_NAME, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        record = conn.execute("SELECT record FROM entries WHERE seq = 3").fetchone()[0]
        assert b'"kind":"update_submitted"' in record
        conn.execute("UPDATE entries SET record = ? WHERE seq = 3", (record.replace(b'"examples":', b'"examples":1'),))
        conn.executescript(SCHEMA)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    done = _ledger("verify", str(copy))
    assert done.returncode == 3
    assert "entry 3" in done.stderr and "signature" in done.stderr
    missing = _ledger("verify", str(tmp_path / "nowhere"))
    assert missing.returncode == 3 and "no ledger found" in missing.stderr

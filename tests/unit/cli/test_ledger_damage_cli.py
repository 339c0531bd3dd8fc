"""``fedswarm ledger`` on a damaged ledger: one line naming the file and what is damaged, exit 3, no traceback.

Each case is what one flipped bit does to a recorded ledger (a checkpoint head read as text, a record that
no longer parses, a Merkle node key out of order, an objects index entry that no longer finds its row) or a
stray file in the object folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.packed import PackedObjects
from fedswarm.ledger.store import DB_NAME, LedgerStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_damage import flip_node_level, garble_index_key, has_dbstat, stray_object_file
from ledger_fixtures import build_ledger, tamper

needs_dbstat = pytest.mark.skipif(not has_dbstat(), reason="this SQLite lacks the dbstat virtual table")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    build_ledger(tmp_path / "run" / "ledger", rounds=3, members=4)
    return tmp_path / "run"


def _error(run: Path, *args: str) -> str:
    """Run ``fedswarm ledger ARGS``; it must exit 3 with one ``error:`` line (no traceback); return it."""
    result = CliRunner().invoke(app, ["ledger", *args])
    assert result.exit_code == 3, (args, result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), (args, result.exception)
    lines = [line for line in result.output.replace(f"{run}/", "RUN/").splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, (args, result.output)
    return " ".join(line.strip() for line in lines[errors[0] :])  # the line as the console wrapped it


def test_a_checkpoint_head_stored_as_text(run: Path) -> None:
    tamper(run / "ledger", "UPDATE checkpoints SET head = CAST(head AS TEXT) WHERE id = 2")
    assert _error(run, "verify", str(run)) == "error: checkpoint #2: the head is stored as text, not as a blob"
    expected = "error: RUN/ledger/ledger.sqlite: checkpoint #2: the head is stored as text, not as a blob"
    assert _error(run, "prove", str(run), "--entry", "3") == expected
    for args in (["blame", str(run)], ["anchor", str(run)]):
        assert _error(run, *args).endswith("checkpoint #2: the head is stored as text, not as a blob")
    report = CliRunner().invoke(app, ["ledger", "export", str(run)])  # the audit report says what failed
    assert report.exit_code == 0 and json.loads(report.stdout)["verification"] == {
        "ok": False,
        "error": "checkpoint #2: the head is stored as text, not as a blob",
    }


def test_a_record_that_does_not_parse(run: Path) -> None:
    with LedgerStore(run / "ledger", readonly=True) as store:
        record = store.record(5)
        round_ = store.entry(5).entry.round
    tamper(run / "ledger", "UPDATE entries SET record = ? WHERE seq = 5", [record.replace(b'"author"', b'"x"', 1)])
    named = "RUN/ledger/ledger.sqlite: entry 5: the record does not parse"
    for args in (
        ["show", str(run)],
        ["show", str(run), "--round", str(round_)],
        ["prove", str(run), "--entry", "5"],
        ["export", str(run)],
        ["export", str(run), "--format", "html"],
        ["lineage", str(run), "--model", "0" * 64, "--no-verify"],
        ["blame", str(run), "--no-verify"],
    ):
        assert _error(run, *args).startswith(f"error: {named}"), args
    assert _error(run, "verify", str(run)).startswith("error: entry 5: the record does not parse")


def test_a_stray_file_in_the_object_folder(run: Path) -> None:
    stray_object_file(run / "ledger")
    assert _error(run, "verify", str(run)) == (
        "error: object folder holds a file that is not a content-addressed object: RUN/ledger/objects/ab/copy.safetensors"
    )


@needs_dbstat
def test_a_node_key_out_of_order(run: Path) -> None:
    flip_node_level(run / "ledger", 1, 5)
    line = _error(run, "verify", str(run))
    assert line.startswith("error: RUN/ledger/ledger.sqlite: the database file is damaged")
    assert "PRIMARY KEY order for nodes" in line


@needs_dbstat
def test_a_damaged_objects_index(run: Path) -> None:
    packed = PackedObjects(run / "ledger" / DB_NAME)
    digest = packed.digests()[0]
    packed.close()
    garble_index_key(run / "ledger", digest)
    assert _error(run, "verify", str(run)) == (
        f"error: packed object {digest} in RUN/ledger/ledger.sqlite: the objects table's index does not find its "
        "row (the database is damaged)"
    )

"""Audits of runs whose updates were never seen individually (central DP, SecAgg+, CKKS, group-wise), and
ties of blame's largest shift.

Such a run commits each round's contributors without update digests: lineage lists them and says the
inputs were aggregated privately, blame gives the reason instead of per-contributor statistics, and the
audit report (JSON and HTML) shows the rounds with their contributors.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.audit import PRIVATE_REASON, lineage, load_audit
from fedswarm.ledger.blame import blame
from fedswarm.ledger.report import audit_report, blame_json, blame_text, describe, lineage_json
from fedswarm.ledger.report_html import render_html
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger

MEMBERS = [f"member-{m:05d}" for m in range(4)]
ROUNDS = 3
KINDS: dict[str, dict[str, Any]] = {
    "central-dp": {"privacy": {"dp": "central", "noise_multiplier": 1.0, "clip": 1.0, "delta": 0.01}},
    "secagg+": {"privacy": {"secure_aggregation": "secagg+", "secagg": {"clip": 1.0}}},
    "ckks": {"privacy": {"secure_aggregation": "ckks"}},
    "groupwise": {"robustness": {"groupwise": {"groups": 2}}},
}
runner = CliRunner()


@dataclass(frozen=True)
class Run:
    folder: Path
    history: list[dict[str, Any]]
    final_digest: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    out = {}
    for kind, extra in KINDS.items():
        raw = {
            "federation": {"name": "private", "members": len(MEMBERS), "rounds": ROUNDS, "seed": 2},
            "data": {"dataset": "breast_cancer"},
            "strategy": {"name": "fedavg", "rule": {"name": "mean"}},
            "baselines": {"local_only": False, "centralized": False},
            **extra,
        }
        folder = tmp_path_factory.mktemp(kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CKKS simulation keys warn that they are for simulation only
            result = run_simulation(parse_spec(raw), out_dir=folder)
        out[kind] = Run(folder, result.history, result.history[-1]["model_digest"])
    return out


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["ledger", *args])
    return result.exit_code, result.stdout


def _largest_shift(history: list[dict[str, Any]]) -> int:
    """The round after the largest change of held-out accuracy (the earliest on a tie)."""
    accuracy = [h["accuracy"] for h in history]
    changes = [abs(b - a) for a, b in itertools.pairwise(accuracy)]
    return int(history[changes.index(max(changes)) + 1]["round"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_ledger_commits_contributors_without_inputs(runs: dict[str, Run], kind: str) -> None:
    run = runs[kind]
    verify_ledger(run.folder)
    log = load_audit(run.folder)
    assert [h["accepted"] for h in run.history] == [len(MEMBERS)] * ROUNDS
    for record in log.rounds.values():
        assert record.aggregate is not None and record.aggregate.inputs == ()
        assert record.aggregate.contributors == tuple(MEMBERS) and record.submissions == {}
    with LedgerStore(log.folder, readonly=True) as store:
        lines = [describe(s.entry) for s in store.select(round=2) if s.entry.kind == "aggregate_committed"]
    assert lines == [
        f"round 2: 4 contributors aggregated privately (no update digests) -> model {run.history[1]['model_digest'][:12]}"
    ]


@pytest.mark.parametrize("kind", list(KINDS))
def test_lineage_lists_contributors_of_private_rounds(runs: dict[str, Run], kind: str) -> None:
    run = runs[kind]
    log = load_audit(run.folder)
    steps = lineage(log, run.final_digest)
    assert [s.round for s in steps] == list(range(1, ROUNDS + 1))
    assert [s.model for s in steps] == [h["model_digest"] for h in run.history]
    assert steps[0].base_model == log.created.initial_model
    for step in steps:
        assert step.private
        assert [c.member for c in step.contributors] == MEMBERS
        assert all(
            c.update is None and c.examples is None and c.norm is None and c.seq is None for c in step.contributors
        )
        assert [c.weight for c in step.contributors] == [1.0] * len(MEMBERS)
    data = lineage_json(log.created.initial_model, steps)
    assert data["steps"][1]["private"] and data["steps"][1]["note"] == PRIVATE_REASON
    assert [c["member"] for c in data["steps"][1]["contributors"]] == MEMBERS

    code, out = _cli("lineage", str(run.folder), "--model", run.final_digest[:12])
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"initial model {log.created.initial_model}"
    assert lines[1].startswith(
        f"round    1 (entry {steps[0].entry}): 4 contributors aggregated privately (no per-update digest) -> {steps[0].model}"
    )
    assert lines[2].split() == ["member-00000", "weight=1,", "update", "aggregated", "privately"]
    assert len(lines) == 1 + ROUNDS * (1 + len(MEMBERS))
    code, out = _cli("lineage", str(run.folder), "--model", run.final_digest, "--json", "--no-verify")
    assert code == 0, out
    assert json.loads(out) == json.loads(json.dumps(data))


@pytest.mark.parametrize("kind", list(KINDS))
def test_blame_says_why_private_rounds_have_no_statistics(runs: dict[str, Run], kind: str) -> None:
    run = runs[kind]
    log = load_audit(run.folder)
    result = blame(log, metric="accuracy")
    expected = _largest_shift(run.history)
    assert result.round == expected and result.rounds == (expected,)
    assert result.contributors == ()
    assert result.private_rounds == {expected: tuple(MEMBERS)}
    before = log.objects.get_parameters(run.history[expected - 2]["model_digest"]).flatten(np.float64)
    after = log.objects.get_parameters(run.history[expected - 1]["model_digest"]).flatten(np.float64)
    assert result.aggregate_norms[expected] == pytest.approx(float(np.linalg.norm(after - before)))
    data = blame_json(result)
    assert data["contributors"] == []
    assert data["private_rounds"] == [{"round": expected, "contributors": MEMBERS, "reason": PRIVATE_REASON}]

    code, out = _cli("blame", str(run.folder))
    assert code == 0, out
    assert out.splitlines() == blame_text(result)
    assert f"round {expected}: 4 contributors ({', '.join(MEMBERS)}), no per-contributor statistics" in out
    assert "aggregated privately" in out and "member" not in out.splitlines()[1].split()  # no empty table
    code, out = _cli("blame", str(run.folder), "--json", "--no-verify")
    assert code == 0 and json.loads(out)["private_rounds"] == data["private_rounds"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_export_shows_private_rounds(runs: dict[str, Run], kind: str, tmp_path: Path) -> None:
    run = runs[kind]
    code, out = _cli("export", str(run.folder), "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["verification"]["ok"] and report["final_model"] == run.final_digest
    for row, history in zip(report["rounds"], run.history, strict=True):
        assert row["accepted"] == len(MEMBERS) and row["contributors"] == MEMBERS and row["private"]
        assert row["model"] == history["model_digest"]
    assert report["blame"]["private_rounds"][0]["contributors"] == MEMBERS
    if kind == "central-dp":
        spent = report["rounds"][-1]["privacy"]
        assert len(spent) == 1 and spent[0]["epsilon"] > 0 and report["privacy"]["round"] == ROUNDS
    assert audit_report(load_audit(run.folder), verify_ledger(run.folder)) == report

    page_file = tmp_path / "report.html"
    code, out = _cli("export", str(run.folder), "--format", "html", "--out", str(page_file))
    assert code == 0, out
    page = page_file.read_text(encoding="utf-8")
    rows = re.findall(r"<tr><td>(\d+)</td><td>coordinator</td><td>4</td><td>4</td><td>([^<]*)</td>", page)
    assert rows == [(str(r), "aggregated privately") for r in range(1, ROUNDS + 1)]
    blamed = report["blame"]["private_rounds"][0]["round"]
    norm = report["blame"]["aggregate_norms"][str(blamed)]
    assert f"no per-contributor statistics; aggregate step norm {norm:.4g}. Why: " in page
    assert page == render_html(report)


def test_blame_reports_ties_within_a_tiny_tolerance(tmp_path: Path) -> None:
    # |changes|: 0.08 (1->2), 0.08 (2->3), 0.06, 0.08 (4->5), 0.01; in floating point 0.58 - 0.5 and
    # 0.66 - 0.58 differ in their last bits, so only a tolerance sees the tie
    accuracies = [0.5, 0.58, 0.66, 0.6, 0.52, 0.53]
    assert 0.58 - 0.5 != 0.66 - 0.58
    folder, _ = build_ledger(tmp_path / "l", rounds=6, members=3, accuracies=accuracies)
    result = blame(load_audit(folder))
    assert (result.previous_round, result.round) == (1, 2)
    assert [(t.previous_round, t.round) for t in result.ties] == [(2, 3), (4, 5)]
    assert [t.change for t in result.ties] == pytest.approx([0.08, -0.08])
    assert result.private_rounds == {} and len(result.contributors) == 3
    data = blame_json(result)
    assert [(t["previous_round"], t["round"]) for t in data["ties"]] == [(2, 3), (4, 5)]
    assert data["ties"][1]["before"] == pytest.approx(0.6) and data["ties"][1]["after"] == pytest.approx(0.52)
    code, out = _cli("blame", str(folder))
    assert code == 0, out
    assert (
        out.splitlines()[1] == "tied with 2 other shift(s) of the same size: round 2 to 3 (+0.08), round 4 to 5 (-0.08)"
    )
    assert "Tied with 2 other shift(s)" in render_html(audit_report(load_audit(folder), None, error="x"))

    distinct, _ = build_ledger(tmp_path / "d", rounds=4, members=3, accuracies=[0.5, 0.6, 0.75, 0.7])
    clear = blame(load_audit(distinct))
    assert (clear.previous_round, clear.round, clear.ties) == (2, 3, ())
    code, out = _cli("blame", str(distinct))
    assert code == 0 and "tied" not in out

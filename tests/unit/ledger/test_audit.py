"""Tests of audits: model lineage, blame of a metric shift, and the JSON/HTML reports."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fedswarm.codec.tensors import digest
from fedswarm.ledger.audit import AuditError, lineage, load_audit, resolve_model
from fedswarm.ledger.blame import blame
from fedswarm.ledger.report import audit_report, blame_json, describe
from fedswarm.ledger.report_html import render_html
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger


def test_lineage_walks_back_to_the_initial_model(tmp_path: Path) -> None:
    folder, models = build_ledger(tmp_path / "l", rounds=4, members=3)
    log = load_audit(folder)
    steps = lineage(log, digest(models[3]))
    assert [s.round for s in steps] == [1, 2, 3]
    assert steps[0].base_model == digest(models[0]) == log.created.initial_model
    for step, before, after in zip(steps, models, models[1:], strict=False):
        assert (step.base_model, step.model) == (digest(before), digest(after))
        assert [c.member for c in step.contributors] == ["member-00000", "member-00001", "member-00002"]
        assert step.metrics["accuracy"] == pytest.approx(0.5 + 0.01 * step.round)
    assert lineage(log, digest(models[0])) == []
    assert resolve_model(log, digest(models[2])[:10]) == digest(models[2])
    with pytest.raises(AuditError, match="not produced"):
        lineage(log, "f" * 64)
    with pytest.raises(AuditError, match="at least 8"):
        resolve_model(log, "abc")


def test_blame_finds_the_largest_shift_and_the_outlier(tmp_path: Path) -> None:
    accuracies = [0.5, 0.55, 0.58, 0.2, 0.25]
    folder, models = build_ledger(tmp_path / "l", rounds=5, members=4, accuracies=accuracies, outlier=(4, 2))
    result = blame(load_audit(folder), metric="accuracy")
    assert (result.previous_round, result.round) == (3, 4)
    assert result.before == pytest.approx(0.58) and result.after == pytest.approx(0.2)
    assert result.change == pytest.approx(-0.38) and result.scope == "central"
    assert result.rounds == (4,)
    by_member = {c.member: c for c in result.contributors}
    assert set(by_member) == {"member-00000", "member-00001", "member-00002", "member-00003"}
    outlier = by_member["member-00002"]
    assert outlier.norm == max(c.norm for c in result.contributors)
    assert all(c.retained for c in result.contributors)
    # The aggregate step is the example-weighted mean (the fixture's FedAvg), so both distances agree,
    # and they are computed from the stored update objects.
    step = models[4].flatten() - models[3].flatten()
    assert result.aggregate_norms[4] == pytest.approx(float(np.linalg.norm(step)), rel=1e-5)
    for c in result.contributors:
        assert c.distance_to_mean == pytest.approx(c.distance_to_aggregate, rel=1e-4, abs=1e-6)
    assert outlier.distance_to_aggregate == max(c.distance_to_aggregate or 0 for c in result.contributors)
    members_scope = blame(load_audit(folder), metric="accuracy_worst10", scope="members")
    assert members_scope.round == 4 and members_scope.change == pytest.approx(-0.19)
    assert blame_json(result)["contributors"][2]["member"] == "member-00002"


def test_blame_without_retained_updates_and_without_data(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "l", rounds=3, members=3, retain=False, accuracies=[0.1, 0.9, 0.95])
    result = blame(load_audit(folder))
    assert result.round == 2 and all(c.distance_to_aggregate is None and not c.retained for c in result.contributors)
    with pytest.raises(AuditError, match="evaluated in 0 round"):
        blame(load_audit(folder), metric="f1")
    short, _ = build_ledger(tmp_path / "s", rounds=1, members=2)
    with pytest.raises(AuditError, match="two are needed"):
        blame(load_audit(short))


def test_report_json_and_html(tmp_path: Path) -> None:
    folder, models = build_ledger(tmp_path / "l", rounds=3, members=3, accuracies=[0.3, 0.8, 0.81])
    report = audit_report(load_audit(folder), verify_ledger(folder))
    assert report["format"] == "fedswarm/audit-report/v1"
    assert report["verification"]["ok"] and report["verification"]["final_checkpoints"] == 3
    assert report["final_model"] == digest(models[3])
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    assert report["rounds"][1]["metrics"]["accuracy"] == pytest.approx(0.8)
    assert report["blame"]["round"] == 2
    json.dumps(report)
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "Verified" in page and "member-00001" in page
    embedded = re.search(r"<script type='application/json' id='report'>(.*)</script>", page)
    assert embedded is not None and json.loads(embedded.group(1))["final_model"] == digest(models[3])
    failed = render_html(audit_report(load_audit(folder), None, error="entry 3: <script>alert(1)</script>"))
    assert "FAILED" in failed and "<script>alert" not in failed and "&lt;script&gt;" in failed


def test_describe_every_entry(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "l", rounds=1, members=2)
    with LedgerStore(folder, readonly=True) as store:
        lines = [describe(store.entry(i).entry) for i in range(store.size)]
    assert lines[0].startswith("2 members listed of 2, strategy fedavg")
    assert lines[1].startswith("round 1: 2 selected")
    assert "examples=" in lines[2] and "norm=" in lines[2]
    assert "2 updates -> model" in lines[4]
    assert "accuracy=0.51" in lines[5]

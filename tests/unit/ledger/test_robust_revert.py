"""Revert: recomputing the history without a member reproduces, model for model, a run in which that
member was selected but sent nothing; and it refuses, saying why, when it cannot."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import fedswarm.sim.attacks  # noqa: F401  (registers the attack library: the control runs use 'absent')
from fedswarm.cli.revert import revert, revert_run
from fedswarm.codec.tensors import digest, load
from fedswarm.core.data import Arrays
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, FitConfig, FitResult, MemberState
from fedswarm.ledger.audit import load_audit
from fedswarm.ledger.revert import RevertError, RoundInputs, check_replay, replay
from fedswarm.ledger.verify import verify_ledger
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec
from fedswarm.task.numpy_softmax import NumpySoftmaxTask

HERE = str(Path(__file__).parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import tamper  # noqa: E402


class FixedUpdateTask(NumpySoftmaxTask):
    """A task whose update depends only on the member's data, never on the global model: every member's
    updates are then the same with or without the excluded member, so the reverted history must equal the
    control run in every round, not only in the first reverted one."""

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        onehot = np.eye(self.info.num_classes)[data.y]
        weight = (data.x.T @ onehot / len(data) * 0.5 - 0.01 * config.round).astype(np.float32)
        bias = (onehot.mean(axis=0) * 0.5).astype(np.float32)
        return FitResult(num_examples=len(data), update=Parameters({"weight": weight, "bias": bias}))


def fixed_update(info: DataInfo, options: Mapping[str, object]) -> FixedUpdateTask:
    return FixedUpdateTask(info)


def _raw(*, task: str = "numpy_softmax", rule: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "federation": {"name": "rv", "members": 8, "rounds": 4, "seed": 6},
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 1.0},
        "task": {"name": task, **({"path": HERE} if ":" in task else {})},
        "strategy": {"name": "fedadam", "server_lr": 0.05, "fraction": 0.75, "min_members": 2,
                     "rule": rule or {"name": "mean"}},
        "baselines": {"local_only": False, "centralized": False},
        "evaluation": {"members": "none"},
    }  # fmt: skip
    raw.update(extra)
    return raw


def _models(run: Path) -> list[str]:
    return [digest(load(p)) for p in sorted((run / "models").glob("round-*.safetensors"))]


X = "member-00003"


@pytest.mark.parametrize(
    "rule", [{"name": "mean"}, {"name": "median"}, {"name": "centered_clipping", "options": {"tau": 0.5}}]
)
def test_revert_reproduces_the_run_in_which_the_member_never_sent(rule: dict[str, Any], tmp_path: Path) -> None:
    task = "test_robust_revert:fixed_update"
    with_x = run_simulation(parse_spec(_raw(task=task, rule=rule)), out_dir=tmp_path / "a")
    control = _raw(task=task, rule=rule, attack={"kind": "absent", "members": [3]})
    run_simulation(parse_spec(control), out_dir=tmp_path / "b")
    # X is sampled in some rounds and not in others (fraction 0.75): the sampling is the same in both runs
    sampled = [h["round"] for h in with_x.history if h["selected"] and X in _contributors(tmp_path / "a", h["round"])]
    assert 0 < len(sampled) < 4
    report = revert_run(tmp_path / "a", exclude=X, from_round=1, out=tmp_path / "rev")
    assert _models(tmp_path / "rev") == _models(tmp_path / "b")
    assert [r["reverted_model"] for r in report["rounds"]] == _models(tmp_path / "b")
    assert report["rounds_changed"] == len(sampled)
    assert _models(tmp_path / "a") != _models(tmp_path / "b")
    # the recomputed models have a ledger of their own, which verifies and names X as dropped
    verify_ledger(tmp_path / "rev" / "ledger")
    log = load_audit(tmp_path / "rev" / "ledger")
    assert all(X not in r.aggregate.contributors for r in log.rounds.values() if r.aggregate)
    assert any(X in r.aggregate.dropouts for r in log.rounds.values() if r.aggregate)
    assert [r.aggregate.model for r in log.rounds.values() if r.aggregate] == _models(tmp_path / "b")


def _contributors(run: Path, rnd: int) -> tuple[str, ...]:
    agg = load_audit(run).rounds[rnd].aggregate
    assert agg is not None
    return agg.contributors


def test_from_round_keeps_earlier_contributions(tmp_path: Path) -> None:
    """With the real task, later updates depend on X's influence; excluding X from the last round on gives
    exactly the run in which X was absent from that round."""
    base = _raw(strategy={"name": "fedavg", "min_members": 2})
    run_simulation(parse_spec(base), out_dir=tmp_path / "a")
    run_simulation(parse_spec({**base, "attack": {"kind": "absent", "members": [3], "from_round": 4}}),
                   out_dir=tmp_path / "b")  # fmt: skip
    report = revert_run(tmp_path / "a", exclude=X, from_round=4, out=tmp_path / "rev")
    assert _models(tmp_path / "rev") == _models(tmp_path / "b")
    assert _models(tmp_path / "rev")[:3] == _models(tmp_path / "a")[:3]
    assert report["rounds_changed"] == 1
    assert set(report["final"]["change"]) >= {"accuracy", "loss"}
    change = report["final"]["reverted"]["accuracy"] - report["final"]["original"]["accuracy"]
    assert report["final"]["change"]["accuracy"] == pytest.approx(change)


def test_cli_reports_the_metric_change(tmp_path: Path) -> None:
    run_simulation(parse_spec(_raw()), out_dir=tmp_path / "a")
    app = typer.Typer()
    app.command()(revert)
    result = CliRunner().invoke(app, [str(tmp_path / "a"), "--exclude", X, "--out", str(tmp_path / "rev")])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "->" in result.stdout
    report = json.loads((tmp_path / "rev" / "revert.json").read_text())
    assert report["exclude"] == X and len(report["rounds"]) == 4
    bad = CliRunner().invoke(app, [str(tmp_path / "a"), "--exclude", "member-00099", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "contributed no update" in bad.output


def test_updates_not_retained_cannot_be_reverted(tmp_path: Path) -> None:
    run_simulation(parse_spec(_raw(ledger={"retain_updates": False})), out_dir=tmp_path / "a")
    with pytest.raises(RevertError, match="retain_updates = false"):
        revert_run(tmp_path / "a", exclude=X, from_round=1, out=tmp_path / "rev")


def test_a_missing_update_object_names_the_round(tmp_path: Path) -> None:
    run_simulation(parse_spec(_raw()), out_dir=tmp_path / "a")
    log = load_audit(tmp_path / "a")
    agg = log.rounds[2].aggregate
    assert agg is not None
    tamper(log.folder, "DELETE FROM objects WHERE digest = ?", [agg.inputs[0]])  # a retained update goes missing
    with pytest.raises(RevertError, match="round 2: the update .* not retained"):
        revert_run(tmp_path / "a", exclude=X, from_round=1, out=tmp_path / "rev", verify=False)


def test_secure_or_groupwise_runs_cannot_be_reverted(tmp_path: Path) -> None:
    run_simulation(parse_spec(_raw()), out_dir=tmp_path / "a")
    spec_file = tmp_path / "a" / "spec.toml"
    original = spec_file.read_text()
    assert "rounds = 4" in original
    spec_file.write_text(original.replace("rounds = 4", "rounds = 5"))
    with pytest.raises(RevertError, match="does not match the spec digest"):
        revert_run(tmp_path / "a", exclude=X, from_round=1, out=tmp_path / "rev")
    spec_file.write_text(original)
    from fedswarm.cli import revert as cli_revert

    with pytest.raises(RevertError, match="group sums"):
        cli_revert._refuse_hidden(parse_spec(_raw(robustness={"groupwise": {"groups": 2}})))
    with pytest.raises(RevertError, match="only ever held sums"):
        cli_revert._refuse_hidden(parse_spec(_raw(privacy={"secure_aggregation": "secagg+"})))


def test_replay_refuses_a_history_it_cannot_reproduce() -> None:
    initial = Parameters({"w": np.zeros(2, dtype=np.float32)})
    rounds = [
        RoundInputs(1, ("a", "b"), np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 3.0]), model="0" * 64),
    ]
    models = replay(initial, rounds, aggregate=lambda r, x, u, w: x + w @ u / w.sum())
    np.testing.assert_array_equal(models[0]["w"], np.array([0.25, 0.75], dtype=np.float32))
    with pytest.raises(RevertError, match="round 1: re-aggregating"):
        check_replay(rounds, models)
    without_b = replay(initial, rounds, aggregate=lambda r, x, u, w: x + w @ u / w.sum(), exclude="b")
    np.testing.assert_array_equal(without_b[0]["w"], np.array([1.0, 0.0], dtype=np.float32))
    with pytest.raises(RevertError, match="min_members"):
        replay(initial, rounds, aggregate=lambda r, x, u, w: x, exclude="b", min_members=2)


def test_fltrust_histories_are_replayed_with_the_root_update(tmp_path: Path) -> None:
    raw = _raw(rule={"name": "fltrust", "options": {"root_size": 40}})
    raw["strategy"]["name"] = "fedavg"
    raw["strategy"].pop("server_lr")
    run_simulation(parse_spec(raw), out_dir=tmp_path / "a")
    # revert_run first replays the unchanged history and checks every model digest: that passes only if
    # the aggregator's root update is recomputed exactly as the run computed it
    report = revert_run(tmp_path / "a", exclude=X, from_round=1, out=tmp_path / "rev")
    assert report["rounds_changed"] > 0
    assert report["final_model_digest"] != report["original_final_model_digest"]

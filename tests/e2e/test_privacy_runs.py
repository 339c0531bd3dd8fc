"""Whole simulated runs with [privacy]: secure aggregation reproduces the plain model within its error,
dropouts are survived or abort the run with the reason, DP runs report what they spend, and the CLI
refuses unsafe settings."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.core.errors import RoundAborted
from fedswarm.privacy.dp.accounting import compute_epsilon
from fedswarm.privacy.dp.local import dpsgd_epsilon
from fedswarm.privacy.he.ckks import CKKSParams, ckks_error_bound
from fedswarm.sim.engine import run_simulation

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures"))
from privtasks import FIXTURES, spec

warnings.simplefilter("ignore")
SECAGG = {"secure_aggregation": "secagg+", "secagg": {"bits": 24, "rounding": "deterministic"}}


def _final(privacy: dict[str, Any] | None, **over: Any) -> Any:
    return run_simulation(spec(privacy, **over), write_outputs=False)


@pytest.fixture(scope="module")
def plain_one_round() -> Any:
    return _final(None, federation__rounds=1)


def test_secagg_run_equals_the_plain_run_within_the_quantization_bound(plain_one_round: Any) -> None:
    secure = _final(SECAGG, federation__rounds=1)
    # one round of FedAvg (server_lr 1): the models differ by the error of the mean of 6 quantized updates
    bound = 6 * 0.5 / ((2**23 - 1) / 5.0) / 6
    diff = np.abs(secure.final.flatten() - plain_one_round.final.flatten())
    assert float(diff.max()) <= bound + 1e-6  # float32 model
    assert secure.history[0]["privacy"]["transport"]["quantization_error_bound"] == pytest.approx(6 * bound)
    assert secure.summary["privacy"]["epsilon"] is None and secure.summary["privacy"]["secure_aggregation"] == "secagg+"
    # over several rounds the rounding errors stay at the same scale
    plain3, secure3 = _final(None, federation__rounds=3), _final(SECAGG, federation__rounds=3)
    assert secure3.final.allclose(plain3.final, atol=1e-4)
    assert secure3.summary["final"]["accuracy"] == pytest.approx(plain3.summary["final"]["accuracy"], abs=1e-9)


def test_ckks_run_equals_the_plain_run_within_the_stated_error(plain_one_round: Any) -> None:
    secure = _final({"secure_aggregation": "ckks"}, federation__rounds=1)
    bound = ckks_error_bound(6, CKKSParams()) / 6
    diff = np.abs(secure.final.flatten() - plain_one_round.final.flatten())
    assert float(diff.max()) <= bound + 1e-6  # float32 model
    assert secure.history[0]["privacy"]["transport"]["ciphertexts_per_member"] == 1


def test_dropouts_up_to_the_tolerance_are_survived_and_beyond_abort_the_run() -> None:
    task = {"task__name": "privtasks:failing", "task__path": FIXTURES}
    # 6 members, complete graph of degree 5, threshold 4: one member may drop out of a round
    ok = _final(SECAGG, federation__rounds=3, task__options={"fail": "2", "run_seed": 3, "rounds": "2"}, **task)
    assert [h["accepted"] for h in ok.history] == [6, 5, 6] and ok.summary["dropouts"] == 1
    assert "injected failure of member 2" in ok.history[1]["dropouts"]["member-00002"]
    with pytest.raises(RoundAborted) as info:
        _final(SECAGG, federation__rounds=3, task__options={"fail": "2,4", "run_seed": 3, "rounds": "2"}, **task)
    text = str(info.value)
    assert text.startswith("round 2: secure aggregation (SecAgg+) aborted: phase 2 (masked input)")
    assert "injected failure of member 4" in text


def test_distributed_dp_with_secagg_writes_what_it_spends(tmp_path: Path) -> None:
    privacy = {
        "dp": "distributed",
        "noise_multiplier": 1.0,
        "delta": 1e-4,
        "clip": 1.0,
        "secure_aggregation": "secagg+",
        "min_survivors": 5,
        "adaptive_clip": {"count_noise_multiplier": 1.0},
    }
    result = run_simulation(spec(privacy, federation__rounds=2), out_dir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    expected = [
        compute_epsilon(
            accountant="pld",
            sampling="poisson",
            population=6,
            sample_size=6,
            noise_multiplier=1.0,
            delta=1e-4,
            rounds=r,
        )
        for r in (1, 2)
    ]
    assert [x["privacy"]["epsilon"] for x in lines] == pytest.approx(expected, rel=1e-12)
    assert all(x["privacy"]["accountant"] == "pld" and x["privacy"]["delta"] == 1e-4 for x in lines)
    assert lines[0]["privacy"]["clip"] == 1.0 and lines[1]["privacy"]["clip"] != 1.0  # adaptive clipping moved
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == pytest.approx(expected[-1], rel=1e-12)
    assert summary["privacy"]["min_survivors"] == 5 and summary["privacy"]["dp"] == "distributed"
    assert "train_loss" not in lines[0]  # per-member training metrics are not released under DP
    assert result.summary["privacy"] == summary["privacy"]


def test_local_dp_sgd_run_reports_the_worst_members_epsilon() -> None:
    privacy = {"dp": "local", "noise_multiplier": 1.1, "delta": 1e-5, "clip": 1.0}
    result = _final(
        privacy,
        federation__members=4,
        federation__rounds=2,
        task__name="torch_mlp",
        task__options={"hidden_layers": 4},
    )
    records = result.summary["privacy"]["min_records"]
    worst = dpsgd_epsilon(
        accountant="pld", records=records, batch_size=16, epochs=1, participations=2, noise_multiplier=1.1, delta=1e-5
    )
    assert result.summary["privacy"]["epsilon"] == pytest.approx(worst, rel=1e-12)
    assert result.summary["privacy"]["level"] == "sample" and result.summary["privacy"]["opacus"]
    assert result.summary["final"]["accuracy"] > 0.5


SPEC = """
[federation]
name = "clinic"
members = 5
rounds = 2
seed = 1

[data]
dataset = "breast_cancer"

[strategy]
name = "fedavg"
min_members = 3

[ledger]
enabled = false

[privacy]
dp = "central"
noise_multiplier = 1.0
delta = {delta}
clip = 1.0
secure_aggregation = "secagg+"
"""


def test_cli_reports_privacy_and_refuses_a_large_delta(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(delta="1e-5"))
    r = runner.invoke(app, ["simulate", str(path), "--json", "-q", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out["privacy"]) >= {"epsilon", "delta", "accountant"} and out["privacy"]["delta"] == 1e-5
    path.write_text(SPEC.format(delta="0.3"))
    r = runner.invoke(app, ["simulate", str(path), "-q", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2
    assert "privacy.delta" in r.output and "1 / members" in r.output


@pytest.mark.parametrize("privacy", [SECAGG, {"secure_aggregation": "ckks"}], ids=["secagg+", "ckks"])
def test_worker_processes_hold_the_member_side_state(privacy: dict[str, Any]) -> None:
    # members are pinned to two worker processes, each building its own member-side protocol state
    # (and, for CKKS, reading the same simulation keys); the result matches the in-process run
    inprocess = _final(privacy, federation__rounds=2)
    workers = _final(privacy, federation__rounds=2, simulation__backend="processes", simulation__workers=2)
    assert workers.final.allclose(inprocess.final, atol=1e-6)
    assert workers.history[-1]["accepted"] == 6

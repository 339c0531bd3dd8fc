"""The fedswarm command end to end: real subprocesses for the happy paths, every bad input refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedswarm.cli.main import app

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
runner = CliRunner()

SMALL = """
[federation]
name = "small"
members = 4
rounds = 3
seed = 1

[data]
dataset = "{dataset}"
partition = "iid"
{data_extra}

[task]
name = "{task}"
{task_extra}

[strategy]
name = "{strategy}"
min_members = 2
"""


def write_spec(
    tmp_path: Path,
    *,
    dataset: str = "breast_cancer",
    task: str = "numpy_softmax",
    strategy: str = "fedavg",
    data_extra: str = "",
    task_extra: str = "",
) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(
        SMALL.format(dataset=dataset, task=task, strategy=strategy, data_extra=data_extra, task_extra=task_extra)
    )
    return p


def fedswarm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedswarm", *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )


def test_simulate_json_line_has_the_promised_keys(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    proc = fedswarm("simulate", str(spec), "--json", "--out", str(tmp_path / "run"), "--rounds", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["rounds"] == 2
    for key in ("accuracy", "loss"):
        assert isinstance(out["final"][key], float)
    assert isinstance(out["baselines"]["local_only"]["accuracy"], float)
    assert isinstance(out["baselines"]["centralized"]["accuracy"], float)
    for key in ("wall_seconds", "bytes_up", "bytes_down"):
        assert out[key] > 0
    assert out["run_dir"] == str(tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").is_file()


def test_set_overrides_and_their_errors(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    r = runner.invoke(
        app,
        [
            "simulate",
            str(spec),
            "--json",
            "-q",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "strategy.fraction=0.5",
            "--set",
            "federation.rounds=1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["rounds"] == 1
    r = runner.invoke(app, ["simulate", str(spec), "--set", "strategy.fraction=7", "-q"])
    assert r.exit_code == 2
    assert "strategy.fraction" in r.output


@pytest.mark.parametrize(
    ("kwargs", "raw", "code", "message"),
    [
        ({}, "[federation\nmembers = 3", 2, "malformed TOML"),
        ({"strategy": "fedmagic"}, None, 2, "unknown strategy 'fedmagic'"),
        ({"dataset": "mnist_from_the_internet"}, None, 2, "unknown dataset 'mnist_from_the_internet'"),
        ({"task": "nope"}, None, 2, "task.name: unknown task 'nope'"),
        ({"data_extra": "colour = 'blue'"}, None, 2, "data.colour: unknown key"),
        ({"data_extra": "alpha = 'high'"}, None, 2, "data.alpha"),
    ],
)
def test_bad_specs_are_refused_with_the_key_named(
    tmp_path: Path, kwargs: dict[str, str], raw: str | None, code: int, message: str
) -> None:
    spec = write_spec(tmp_path, **kwargs)
    if raw is not None:
        spec.write_text(raw)
    r = runner.invoke(app, ["simulate", str(spec), "-q", "--out", str(tmp_path / "run")])
    assert r.exit_code == code, r.output
    assert message in r.output


def test_missing_spec_file(tmp_path: Path) -> None:
    r = runner.invoke(app, ["simulate", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2
    assert "spec file not found" in r.output


def test_task_returning_wrong_shape_fails_naming_the_tensor(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, task="fedtasks:wrong_shape", task_extra=f"path = '{FIXTURES}'")
    r = runner.invoke(app, ["simulate", str(spec), "-q", "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert "tensor 'bias' has shape [3], expected [2]" in r.output


def test_csv_without_label_column(tmp_path: Path) -> None:
    csv = tmp_path / "local.csv"
    csv.write_text("a,b,c\n" + "\n".join(f"{i},{i * 2},{i % 2}" for i in range(40)) + "\n")
    spec = write_spec(tmp_path, dataset="table", data_extra="path = 'local.csv'\nlabel = 'outcome'")
    r = runner.invoke(app, ["simulate", str(spec), "-q", "--out", str(tmp_path / "run")])
    assert r.exit_code != 0
    assert "outcome" in r.output and "local.csv" in r.output


def test_csv_with_label_column_runs(tmp_path: Path) -> None:
    csv = tmp_path / "local.csv"
    csv.write_text(
        "a,b,outcome\n" + "\n".join(f"{i % 7},{(i * 3) % 5},{'yes' if i % 7 > 3 else 'no'}" for i in range(80)) + "\n"
    )
    spec = write_spec(tmp_path, dataset="table", data_extra="path = 'local.csv'\nlabel = 'outcome'")
    r = runner.invoke(app, ["simulate", str(spec), "-q", "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["final"]["accuracy"] > 0.5


def test_partition_leaving_a_member_without_data(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, dataset="breast_cancer")
    spec.write_text(
        spec.read_text()
        .replace("members = 4", "members = 400")
        .replace('partition = "iid"', 'partition = "dirichlet"\nalpha = 0.05\nmin_samples = 3')
    )
    r = runner.invoke(app, ["simulate", str(spec), "-q", "--out", str(tmp_path / "run")])
    assert r.exit_code != 0
    assert "member" in r.output and "error" in r.output


def test_nan_updates_are_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, task="fedtasks:nan_task", task_extra=f"path = '{FIXTURES}'")
    spec.write_text(spec.read_text().replace("min_members = 2", "min_members = 1"))
    r = runner.invoke(app, ["simulate", str(spec), "-q", "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["rejected"] > 0


def test_init_scaffolds_a_project_that_runs(tmp_path: Path) -> None:
    target = tmp_path / "myfed"
    proc = fedswarm("init", str(target))
    assert proc.returncode == 0, proc.stderr
    assert (target / "fedswarm.toml").is_file() and (target / "task.py").is_file()
    run = fedswarm("simulate", "fedswarm.toml", "--json", "-q", "--rounds", "3", "--out", "run", cwd=target)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["final"]["accuracy"] > 0.8
    again = fedswarm("init", str(target))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_demo_prints_the_table(tmp_path: Path) -> None:
    proc = fedswarm("demo", "--out", str(tmp_path / "demo"), "-q")
    assert proc.returncode == 0, proc.stderr
    for word in ("hospital", "local-only", "federated", "centralized", str(tmp_path / "demo")):
        assert word in proc.stdout


def test_up_refuses_an_unsafe_combination_before_starting_any_node(tmp_path: Path) -> None:
    spec = ROOT / "examples" / "hospitals.toml"
    out = tmp_path / "up"
    r = runner.invoke(app, ["up", str(spec), "--set", "privacy.secure_aggregation=secagg+", "--out", str(out), "-q"])
    assert r.exit_code == 2, r.output
    assert "strategy.rule.name" in r.output and "needs individual updates" in r.output
    assert not out.exists()  # nothing provisioned, no process started

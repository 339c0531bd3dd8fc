from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedswarm.codec.tensors import digest, load
from fedswarm.core.errors import RoundAborted, SpecError
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec

FIXTURES = str(Path(__file__).parents[2] / "fixtures")


def spec(**over: Any) -> Any:
    raw: dict[str, Any] = {
        "federation": {"name": "t", "members": 6, "rounds": 4, "seed": 3},
        "data": {"dataset": "breast_cancer", "partition": "dirichlet", "alpha": 1.0, "min_samples": 10},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.1},
        "strategy": {"name": "fedavg", "fraction": 0.5, "min_members": 2},
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    return parse_spec(raw)


def test_run_writes_every_output(tmp_path: Path) -> None:
    res = run_simulation(spec(), out_dir=tmp_path)
    for name in ("spec.toml", "metrics.jsonl", "summary.json", "baselines.json", "models/final.safetensors"):
        assert (tmp_path / name).is_file(), name
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]
    assert all(json.loads(x)["selected"] == 3 for x in lines)
    for r in range(1, 5):
        assert (tmp_path / "models" / f"round-{r:04d}.safetensors").is_file()
    for p in res.summary["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_model_digest"] == digest(load(tmp_path / "models" / "final.safetensors"))
    assert 0.0 <= summary["final"]["accuracy"] <= 1.0
    assert set(summary["baselines"]) == {"local_only", "centralized"}
    assert summary["bytes_up"] > 0 and summary["bytes_down"] > summary["bytes_up"]


def test_same_seed_same_model_different_seed_different_model(tmp_path: Path) -> None:
    a = run_simulation(spec(), out_dir=tmp_path / "a")
    b = run_simulation(spec(), out_dir=tmp_path / "b")
    c = run_simulation(spec(federation__seed=4), out_dir=tmp_path / "c")
    assert a.summary["final_model_digest"] == b.summary["final_model_digest"]
    assert a.summary["final_model_digest"] != c.summary["final_model_digest"]


def test_federated_beats_local_only_on_non_iid_data(tmp_path: Path) -> None:
    s = spec(federation__rounds=10, data__alpha=0.3, strategy__fraction=1.0)
    res = run_simulation(s, out_dir=tmp_path)
    assert res.summary["final"]["accuracy"] >= res.summary["baselines"]["local_only"]["accuracy"]


def test_process_backend_reproduces_inprocess(tmp_path: Path) -> None:
    base = run_simulation(spec(), out_dir=tmp_path / "in", write_outputs=True)
    proc = run_simulation(spec(simulation__backend="processes", simulation__workers=2), out_dir=tmp_path / "pr")
    assert proc.final.allclose(base.final)
    assert proc.summary["final_model_digest"] == base.summary["final_model_digest"]


def test_member_state_persists_across_rounds_on_disk(tmp_path: Path) -> None:
    s = spec(
        federation__members=4,
        federation__rounds=3,
        strategy__fraction=1.0,
        task__name="fedtasks:counting",
        task__path=FIXTURES,
        simulation__state="disk",
    )
    res = run_simulation(s, out_dir=tmp_path)
    assert res.history[-1]["accepted"] == 4
    from fedswarm.rounds.state import SqliteStateStore

    store = SqliteStateStore(tmp_path / "state" / "member-state-0.sqlite")
    assert [int(store.load(m)["count"][0]) for m in range(4)] == [3, 3, 3, 3]
    store.close()


def test_nan_updates_are_rejected_and_counted(tmp_path: Path) -> None:
    s = spec(strategy__fraction=1.0, strategy__min_members=1, task__name="fedtasks:nan_task", task__path=FIXTURES)
    res = run_simulation(s, out_dir=tmp_path)
    assert res.summary["rejected"] > 0
    assert any("non-finite" in r for h in res.history for r in h["rejected"].values())
    assert np.isfinite(res.final.flatten()).all()


def test_wrong_shape_task_aborts_with_the_tensor_named(tmp_path: Path) -> None:
    s = spec(task__name="fedtasks:wrong_shape", task__path=FIXTURES)
    with pytest.raises(RoundAborted, match=r"tensor 'bias' has shape \[3\], expected \[2\]"):
        run_simulation(s, out_dir=tmp_path)


def test_not_a_task_is_refused() -> None:
    with pytest.raises(SpecError, match="does not implement Task"):
        run_simulation(spec(task__name="fedtasks:not_a_task", task__path=FIXTURES), write_outputs=False)
    with pytest.raises(SpecError, match="has no attribute 'missing'"):
        run_simulation(spec(task__name="fedtasks:missing", task__path=FIXTURES), write_outputs=False)
    with pytest.raises(SpecError, match="unknown task 'nope'"):
        run_simulation(spec(task__name="nope"), write_outputs=False)


@pytest.mark.slow
def test_process_backend_times_out_a_hung_member(tmp_path: Path) -> None:
    s = spec(
        federation__rounds=1,
        strategy__fraction=1.0,
        strategy__min_members=1,
        task__name="fedtasks:sleepy",
        task__path=FIXTURES,
        simulation__backend="processes",
        simulation__workers=2,
        simulation__client_timeout=1.0,
        baselines__local_only=False,
        baselines__centralized=False,
        evaluation__members="none",
    )
    import os

    os.environ["FEDSWARM_TEST_SLEEP"] = "1"
    try:
        res = run_simulation(s, out_dir=tmp_path)
    except RoundAborted as exc:  # every member of a worker that hung is timed out together
        assert "timed out" in str(exc)
        return
    assert any("timed out" in r for r in res.history[0]["dropouts"].values())


@pytest.mark.slow
def test_ray_backend_reproduces_inprocess(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    s = spec(baselines__local_only=False, baselines__centralized=False)
    base = run_simulation(s, out_dir=tmp_path / "in")
    ray_run = run_simulation(
        spec(
            baselines__local_only=False, baselines__centralized=False, simulation__backend="ray", simulation__workers=2
        ),
        out_dir=tmp_path / "ray",
    )
    assert ray_run.summary["final_model_digest"] == base.summary["final_model_digest"]

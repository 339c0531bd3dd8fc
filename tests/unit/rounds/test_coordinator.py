from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import RoundAborted
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState
from fedswarm.rounds.coordinator import Coordinator, worst_fraction_mean
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.messages import Dropout, Exchange
from fedswarm.rounds.stages import ClipNorm
from fedswarm.strategy.base import LocalTraining, Sampling
from fedswarm.strategy.fedavg import FedAvg
from fedswarm.task.numpy_softmax import NumpySoftmaxTask


class ScriptedTask:
    """Each member returns global + (member + 1) in every coordinate, except scripted misbehaviour."""

    def __init__(self, behaviour: dict[int, str]) -> None:
        self.behaviour = behaviour

    def init_parameters(self, *, seed: int) -> Parameters:
        return Parameters({"w": np.zeros(3)})

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        member = int(data.y[0])
        kind = self.behaviour.get(member, "ok")
        if kind == "raise":
            raise ValueError("disk full")
        if kind == "nan":
            return FitResult(num_examples=1, update=Parameters({"w": np.array([np.nan, 0.0, 0.0])}))
        if kind == "shape":
            return FitResult(num_examples=1, parameters=Parameters({"w": np.zeros(4)}))
        if kind == "names":
            return FitResult(num_examples=1, parameters=Parameters({"v": np.zeros(3)}))
        if kind == "type":
            return {"w": np.zeros(3)}  # type: ignore[return-value]
        return FitResult(num_examples=member + 1, parameters=Parameters({"w": parameters["w"] + member + 1}))

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        return EvalResult(num_examples=1, loss=0.0, metrics={"accuracy": float(data.y[0]) / 10})


def _runtime(task: Any, n: int, **kw: Any) -> MemberRuntime:
    def data_for(m: int) -> LocalData:
        arr = Arrays(np.zeros((1, 1), dtype=np.float32), np.array([m]))
        return LocalData(train=arr, test=arr, num_classes=10)

    return MemberRuntime(task, data_for, schema=task.init_parameters(seed=0).schema, **kw)


def _drive(coord: Coordinator, runtime: MemberRuntime, params: Parameters) -> Any:
    gen = coord.run_round(1, params)
    exch: Exchange[Any] = next(gen)
    try:
        while True:
            if exch.kind == "fit":
                replies = {m: runtime.fit(m, r, params.flatten()) for m, r in exch.requests.items()}
            else:
                replies = runtime.evaluate_many(exch.requests.keys(), next(iter(exch.requests.values())))
            exch = gen.send(replies)
    except StopIteration as stop:
        return stop.value


def _coord(n: int, min_members: int = 1, **kw: Any) -> Coordinator:
    s = FedAvg(sampling=Sampling(fraction=1.0, min_members=min_members), training=LocalTraining())
    schema = Parameters({"w": np.zeros(3)}).schema
    return Coordinator(s, schema=schema, population=n, **kw)


def test_round_weights_by_examples_and_reports_everyone() -> None:
    task = ScriptedTask({})
    out = _drive(_coord(3), _runtime(task, 3), task.init_parameters(seed=0))
    # updates 1, 2, 3 weighted by 1, 2, 3: (1 + 4 + 9) / 6
    np.testing.assert_allclose(out.parameters["w"], np.full(3, 14 / 6))
    assert out.accepted == [0, 1, 2] and not out.dropouts and not out.rejected
    assert out.members_eval is not None and out.members_eval.members == 3
    assert out.bytes_down > 0 and out.bytes_up > 0


def test_misbehaving_members_drop_out_with_reasons_and_the_round_goes_on() -> None:
    task = ScriptedTask({0: "raise", 1: "nan", 2: "shape", 3: "names", 4: "type"})
    out = _drive(_coord(6), _runtime(task, 6), task.init_parameters(seed=0))
    assert out.accepted == [5]
    np.testing.assert_allclose(out.parameters["w"], np.full(3, 6.0))
    assert "ValueError: disk full" in out.dropouts[0]
    assert "non-finite" in out.rejected[1]
    assert "tensor 'w' has shape [4], expected [3]" in out.dropouts[2]
    assert "missing tensor(s) ['w']" in out.dropouts[3] and "unexpected tensor(s) ['v']" in out.dropouts[3]
    assert "must return FitResult" in out.dropouts[4]


def test_round_aborts_below_min_members_naming_the_problems() -> None:
    task = ScriptedTask({0: "raise", 1: "nan"})
    with pytest.raises(RoundAborted, match=r"1 valid update\(s\) from 3 selected.*min_members is 2.*disk full"):
        _drive(_coord(3, min_members=2), _runtime(task, 3), task.init_parameters(seed=0))


def test_client_clip_stage_bounds_norm_and_server_sees_clipped() -> None:
    task = ScriptedTask({})
    out = _drive(_coord(2), _runtime(task, 2, stages=[ClipNorm(1.0)]), task.init_parameters(seed=0))
    assert np.allclose(np.linalg.norm(out.updates, axis=1), 1.0)


def test_dropout_object_from_transport_is_recorded() -> None:
    coord = _coord(2)
    task = ScriptedTask({})
    params = task.init_parameters(seed=0)
    gen = coord.run_round(1, params, evaluate=False)
    exch = next(gen)
    runtime = _runtime(task, 2)
    replies: dict[int, Any] = {
        0: Dropout("member-0: unreachable"),
        1: runtime.fit(1, exch.requests[1], params.flatten()),
    }
    with pytest.raises(StopIteration) as stop:
        gen.send(replies)
    assert stop.value.value.dropouts == {0: "member-0: unreachable"}


def test_batched_evaluation_equals_per_member_evaluation() -> None:
    rng = np.random.default_rng(0)
    info = DataInfo(num_features=4, num_classes=3)
    task = NumpySoftmaxTask(info, init="normal")
    datasets = {
        m: LocalData(
            train=Arrays(rng.normal(size=(5, 4)).astype(np.float32), rng.integers(0, 3, 5)),
            test=Arrays(rng.normal(size=(7, 4)).astype(np.float32), rng.integers(0, 3, 7)),
            num_classes=3,
        )
        for m in range(4)
    }
    params = task.init_parameters(seed=1)
    rt = MemberRuntime(task, datasets.__getitem__, schema=params.schema)
    from fedswarm.rounds.messages import EvaluateReply, EvaluateRequest

    req = EvaluateRequest(1, params)
    batched = rt.evaluate_many(range(4), req)
    for m in range(4):
        single = rt.evaluate(m, req)
        assert isinstance(single, EvaluateReply)
        b = batched[m]
        assert isinstance(b, EvaluateReply)
        assert b.metrics["accuracy"] == pytest.approx(single.metrics["accuracy"])
        assert b.loss == pytest.approx(single.loss, rel=1e-6)


def test_worst_fraction_mean() -> None:
    assert worst_fraction_mean(np.array([0.9, 0.1, 0.5])) == pytest.approx(0.1)
    assert worst_fraction_mean(np.arange(20, dtype=float)) == pytest.approx(0.5)

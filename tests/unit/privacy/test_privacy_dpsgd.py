"""DP-SGD through Opacus: noise that the public seed does not determine, per-example clipping, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, TaskError
from fedswarm.core.task import DataInfo, FitConfig, MemberState
from fedswarm.rounds.privacy.dpsgd import DPSGDTask, opacus_version
from fedswarm.task.torch_task import MlpModel, OptimizerSpec, TorchTask, make_torch_mlp_task

INFO = DataInfo(num_features=5, num_classes=2)
RNG = np.random.default_rng(0)
DATA = Arrays(RNG.normal(size=(64, 5)).astype(np.float32), (RNG.random(64) < 0.5).astype(np.int64))
CONFIG = FitConfig(round=1, epochs=1, batch_size=16, learning_rate=0.5, seed=42)


def _task() -> TorchTask:
    return make_torch_mlp_task(INFO, {"hidden_layers": 0, "momentum": 0.0})


def _delta(task: DPSGDTask) -> np.ndarray:
    start = task.init_parameters(seed=1)
    out = task.fit(start, DATA, config=CONFIG, state=MemberState()).parameters
    assert out is not None
    return out.flatten() - start.flatten()


def test_the_noise_is_not_determined_by_the_public_seed() -> None:
    task = DPSGDTask(_task(), noise_multiplier=1.0, max_grad_norm=1.0)
    assert not np.allclose(_delta(task), _delta(task))  # same seed, same data: different noise
    assert opacus_version().startswith("1.")


def test_per_example_clipping_bounds_each_step() -> None:
    # with almost no noise, one step of SGD moves the weights by at most lr * C * (batch / expected batch)
    task = DPSGDTask(_task(), noise_multiplier=1e-6, max_grad_norm=0.01)
    config = FitConfig(round=1, epochs=1, batch_size=64, learning_rate=1.0, seed=1)  # q = 1: one full step
    start = task.init_parameters(seed=1)
    out = task.fit(start, DATA, config=config, state=MemberState()).parameters
    assert out is not None
    assert float(np.linalg.norm(out.flatten() - start.flatten())) <= 0.01 * 1.0 + 1e-4


def test_refusals() -> None:
    class WithBatchNorm(MlpModel):
        def __call__(self) -> torch.nn.Module:
            return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))

    bn = TorchTask(WithBatchNorm(5, (), 2), optimizer_fn=OptimizerSpec())
    with pytest.raises(ConfigurationError, match="cannot be trained with DP-SGD: BatchNorm"):
        DPSGDTask(bn, noise_multiplier=1.0, max_grad_norm=1.0)
    with pytest.raises(ConfigurationError, match="noise_multiplier must be > 0"):
        DPSGDTask(_task(), noise_multiplier=0.0, max_grad_norm=1.0)
    with pytest.raises(ConfigurationError, match="needs a PyTorch task"):
        DPSGDTask(object(), noise_multiplier=1.0, max_grad_norm=1.0)  # type: ignore[arg-type]
    task = DPSGDTask(_task(), noise_multiplier=1.0, max_grad_norm=1.0)
    prox = FitConfig(round=1, epochs=1, batch_size=16, learning_rate=0.1, seed=1, proximal_mu=0.1)
    with pytest.raises(TaskError, match="proximal"):
        task.fit(task.init_parameters(seed=1), DATA, config=prox, state=MemberState())

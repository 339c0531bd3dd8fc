"""A test task for network integration tests: the built-in numpy task, slowed down, optionally broken.

``slow_seconds`` (task option) sleeps in every fit so that a test can act mid-round. A node started with
the environment variable ``FEDSWARM_TEST_WRONG_SHAPE=1`` returns an update of the wrong shape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedswarm.core.data import Arrays
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState, Scalar, Task
from fedswarm.task.numpy_softmax import make_numpy_softmax_task


class SlowTask:
    def __init__(self, inner: Task, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def init_parameters(self, *, seed: int) -> Parameters:
        return self.inner.init_parameters(seed=seed)

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        time.sleep(self.seconds)
        result = self.inner.fit(parameters, data, config=config, state=state)
        if os.environ.get("FEDSWARM_TEST_WRONG_SHAPE") == "1":
            wrong = Parameters({name: np.zeros(3) for name in parameters})
            return FitResult(num_examples=result.num_examples, update=wrong)
        return result

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        return self.inner.evaluate(parameters, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make(info: DataInfo, options: Mapping[str, Scalar]) -> Task:
    seconds = float(options.get("slow_seconds", 0.0))
    inner = make_numpy_softmax_task(info, {k: v for k, v in options.items() if k != "slow_seconds"})
    return SlowTask(inner, seconds)

"""The task the network privacy integration tests' nodes load (``task.name = "network_marking_task:make"``).

It is the slow numpy task of :mod:`network_slow_task` (option ``slow_seconds``). A node started with the
environment variable ``FEDSWARM_TEST_FIT_MARKERS=DIR`` also appends a line to ``DIR/fit-r<round>-s<seed>``
when a fit starts, before it sleeps: a test can then wait until a round's members are training, i.e. until
the round's coordinator has sent its fit-phase assignments (under SecAgg+: after the key and share phases),
and count how often each member trained in a round.
Without the variable (``fedswarm simulate``, an in-process reference) it writes nothing. No tests live here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from network_slow_task import make as make_slow

from fedswarm.core.data import Arrays
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState, Scalar, Task

MARKERS_ENV = "FEDSWARM_TEST_FIT_MARKERS"


def marker_name(rnd: int, seed: int) -> str:
    """The file a fit of round ``rnd`` with fit seed ``seed`` appends to."""
    return f"fit-r{rnd}-s{seed}"


class MarkingTask:
    """Delegates to ``inner``; marks the start of every fit in ``folder`` (when given)."""

    def __init__(self, inner: Task, *, folder: Path | None) -> None:
        self.inner = inner
        self.folder = folder

    def init_parameters(self, *, seed: int) -> Parameters:
        return self.inner.init_parameters(seed=seed)

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        if self.folder is not None:
            with open(self.folder / marker_name(config.round, config.seed), "a", encoding="utf-8") as marker:
                marker.write(f"{os.getpid()}\n")
        return self.inner.fit(parameters, data, config=config, state=state)

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        return self.inner.evaluate(parameters, data)


def make(info: DataInfo, options: Mapping[str, Scalar]) -> Task:
    folder = os.environ.get(MARKERS_ENV)
    return MarkingTask(make_slow(info, options), folder=Path(folder) if folder else None)

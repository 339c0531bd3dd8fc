"""``fedswarm init DIR``: scaffold a federation project that runs as is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedswarm.cli.common import fail

__all__ = ["init"]

SPEC = """\
# A fedswarm federation. Run it with:  fedswarm simulate fedswarm.toml
# Reference of every key: docs/spec.md in the fedswarm repository.

[federation]
name = "{name}"
members = 8
rounds = 15
seed = 0

[data]
dataset = "breast_cancer"      # or "digits", "fraud_synthetic", or "table" with path= and label=
partition = "dirichlet"        # iid | dirichlet | shards | quantity | natural
alpha = 1.0
holdout = 0.2

[task]
name = "task:make_task"         # the task in task.py next to this file

[training]
epochs = 2
batch_size = 16
learning_rate = 0.05

[strategy]
name = "fedavg"
fraction = 1.0
min_members = 4

# Norm bounding at the aggregator (a safe default against outsized or malicious updates): every update is
# clipped to L2 norm 5 before averaging, whether or not its member ran its own [stages] clip. Stronger
# rules (median, trimmed_mean, krum, fltrust ...) and when to pick them: docs/robustness.md. With secure
# aggregation the aggregator cannot see updates: use rule "mean" and [stages] clip = 5.0 instead.
[strategy.rule]
name = "clipped_mean"
options = {{ max_norm = 5.0 }}
"""

TASK = '''\
"""A federated task: logistic regression in numpy, written against fedswarm's task API.

Replace the model with your own; fedswarm calls init_parameters, fit and evaluate, and never sees your
data leave the member that holds it. The same task runs in `fedswarm simulate` and on real nodes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedswarm import (
    Arrays,
    DataInfo,
    EvalResult,
    FitConfig,
    FitResult,
    MemberState,
    Parameters,
    classification_metrics,
)


class LogisticTask:
    def __init__(self, info: DataInfo, l2: float) -> None:
        self.info = info
        self.l2 = l2

    def init_parameters(self, *, seed: int) -> Parameters:
        k = self.info.num_classes
        return Parameters({"w": np.zeros((self.info.num_features, k)), "b": np.zeros(k)})

    def _proba(self, params: Parameters, x: np.ndarray) -> np.ndarray:
        z = x @ params["w"] + params["b"]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        w, b = parameters["w"].copy(), parameters["b"].copy()
        rng = np.random.default_rng(config.seed)
        n = len(data)
        for _ in range(config.epochs):
            order = rng.permutation(n)
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                p = self._proba(Parameters({"w": w, "b": b}), data.x[idx])
                p[np.arange(len(idx)), data.y[idx]] -= 1.0
                w -= config.learning_rate * (data.x[idx].T @ p / len(idx) + self.l2 * w)
                b -= config.learning_rate * p.mean(axis=0)
        return FitResult(num_examples=n, parameters=Parameters({"w": w, "b": b}))

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        proba = self._proba(parameters, data.x)
        m = classification_metrics(data.y, proba, num_classes=self.info.num_classes)
        return EvalResult(num_examples=len(data), loss=m["loss"], metrics=m)


def make_task(info: DataInfo, options: Mapping[str, object]) -> LogisticTask:
    return LogisticTask(info, l2=float(options.get("l2", 1e-4)))  # type: ignore[arg-type]
'''


def init(
    directory: Annotated[Path, typer.Argument(help="folder to create (must not exist or be empty)")],
    name: Annotated[str | None, typer.Option("--name", help="federation name (default: folder name)")] = None,
) -> None:
    """Scaffold a new federation project: a spec and a task module that run as is."""
    if directory.exists() and any(directory.iterdir()):
        fail(f"{directory} exists and is not empty; choose a new folder", 2)
    fed_name = name or directory.resolve().name or "federation"
    if not all(c.isalnum() or c in "_.-" for c in fed_name):
        fail(f"--name {fed_name!r}: use letters, digits, '_', '.', '-' only", 2)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fedswarm.toml").write_text(SPEC.format(name=fed_name), encoding="utf-8")
    (directory / "task.py").write_text(TASK, encoding="utf-8")
    typer.echo(f"created {directory}/fedswarm.toml and {directory}/task.py")
    typer.echo(f"run it:  cd {directory} && fedswarm simulate fedswarm.toml")

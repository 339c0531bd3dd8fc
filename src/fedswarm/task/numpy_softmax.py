"""Softmax (multinomial logistic) regression in plain numpy, trained with mini-batch SGD.

The reference task: vectorized, allocation-light, and deterministic for a given seed. With two classes
it is logistic regression written as a two-class softmax, so the same code serves both. FedProx's
proximal term (Li et al. 2020, "Federated Optimization in Heterogeneous Networks") is applied when
``config.proximal_mu > 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays
from fedswarm.core.errors import SpecError
from fedswarm.core.parameters import Parameters, Schema, TensorSpec
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState, Scalar
from fedswarm.task.metrics import classification_metrics

__all__ = ["NumpySoftmaxTask", "make_numpy_softmax_task"]


def _softmax_inplace(z: npt.NDArray[Any]) -> npt.NDArray[Any]:
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class NumpySoftmaxTask:
    """Softmax regression with parameters ``weight`` (features × classes) and ``bias`` (classes).

    Parameters
    ----------
    info
        Number of features and classes.
    init
        ``"zeros"`` or ``"normal"`` (N(0, 0.01²), seeded).
    l2
        L2 weight decay added to the gradient.
    dtype
        Precision of parameters and arithmetic.
    """

    def __init__(
        self,
        info: DataInfo,
        *,
        init: str = "zeros",
        l2: float = 0.0,
        dtype: str = "float32",
    ) -> None:
        self.info = info
        self.init = init
        self.l2 = float(l2)
        self.dtype = np.dtype(dtype)
        d, k = info.num_features, info.num_classes
        self.schema = Schema((TensorSpec("bias", (k,), self.dtype.str), TensorSpec("weight", (d, k), self.dtype.str)))

    def init_parameters(self, *, seed: int) -> Parameters:
        d, k = self.info.num_features, self.info.num_classes
        if self.init == "zeros":
            w = np.zeros((d, k), dtype=self.dtype)
        else:
            w = np.random.default_rng(seed).normal(0.0, 0.01, size=(d, k)).astype(self.dtype)
        return Parameters({"weight": w, "bias": np.zeros(k, dtype=self.dtype)})

    def _xy(self, data: Arrays) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        x = data.x if data.x.dtype == self.dtype else data.x.astype(self.dtype)
        return x, data.y

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        parameters.check_schema(self.schema, who="global parameters")
        w0 = parameters["weight"]
        b0 = parameters["bias"]
        w = w0.astype(self.dtype, copy=True)
        b = b0.astype(self.dtype, copy=True)
        x, y = self._xy(data)
        n = len(y)
        lr = self.dtype.type(config.learning_rate)
        mu = config.proximal_mu
        l2 = self.l2
        bs = max(1, config.batch_size)
        rng = np.random.Generator(np.random.PCG64(config.seed))
        all_rows = np.arange(min(bs, max(n, 1)))
        picked: list[npt.NDArray[Any]] = []
        for _ in range(config.epochs):
            perm = rng.permutation(n)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                xb = x[idx]
                yb = y[idx]
                m = len(idx)
                rows = all_rows[:m]
                p = _softmax_inplace(xb @ w + b)
                picked.append(p[rows, yb])  # a copy: the probabilities of the true labels, for the loss
                p[rows, yb] -= 1.0
                p /= m
                gw = xb.T @ p
                gb = p.sum(axis=0)
                if mu > 0.0:
                    gw += mu * (w - w0)
                    gb += mu * (b - b0)
                if l2 > 0.0:
                    gw += l2 * w
                w -= lr * gw
                b -= lr * gb
        total_loss = -float(np.log(np.maximum(np.concatenate(picked), 1e-12)).sum()) if picked else 0.0
        seen = n * max(config.epochs, 1)
        return FitResult(
            num_examples=n,
            parameters=Parameters.unflatten(np.concatenate([b, w.reshape(-1)]), self.schema),
            metrics={"train_loss": total_loss / seen if seen else float("nan")},
        )

    def predict_proba(self, parameters: Parameters, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        w = parameters["weight"]
        xx = x if x.dtype == w.dtype else x.astype(w.dtype)
        return _softmax_inplace((xx @ w + parameters["bias"]).astype(np.float64))

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        proba = self.predict_proba(parameters, data.x)
        metrics = classification_metrics(data.y, proba, num_classes=self.info.num_classes)
        return EvalResult(num_examples=len(data), loss=metrics["loss"], metrics=metrics)


_OPTIONS = {"init", "l2", "dtype"}


def make_numpy_softmax_task(info: DataInfo, options: Mapping[str, Scalar]) -> NumpySoftmaxTask:
    """Spec factory: options ``init`` ("zeros" | "normal"), ``l2`` (float), ``dtype`` ("float32" | "float64")."""
    for key in options:
        if key not in _OPTIONS:
            raise SpecError(f"task.options.{key}", f"unknown option for numpy_softmax; known: {sorted(_OPTIONS)}")
    init = str(options.get("init", "zeros"))
    if init not in ("zeros", "normal"):
        raise SpecError("task.options.init", f"must be 'zeros' or 'normal', got {init!r}")
    dtype = str(options.get("dtype", "float32"))
    if dtype not in ("float32", "float64"):
        raise SpecError("task.options.dtype", f"must be 'float32' or 'float64', got {dtype!r}")
    l2 = options.get("l2", 0.0)
    if isinstance(l2, bool) or not isinstance(l2, int | float) or l2 < 0:
        raise SpecError("task.options.l2", f"must be a non-negative number, got {l2!r}")
    return NumpySoftmaxTask(info, init=init, l2=float(l2), dtype=dtype)

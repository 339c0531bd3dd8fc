"""SklearnTask: training from global arrays, shapes, determinism, FedProx step, missing classes, errors."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, DataError, ParameterError, SpecError, TaskError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, FitConfig, MemberState, ProbabilisticTask
from fedswarm.task.sklearn_task import SklearnTask, make_sklearn_task

ESTIMATORS = ("sgd", "logistic", "mlp")


def _split(x: npt.NDArray[Any], y: npt.NDArray[Any], n_train: int) -> tuple[Arrays, Arrays]:
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    return Arrays(x[:n_train], y[:n_train]), Arrays(x[n_train:], y[n_train:])


@pytest.fixture(scope="module")
def digits() -> tuple[Arrays, Arrays]:
    x, y = load_digits(return_X_y=True)
    return _split(x / 16.0, y, 600)


@pytest.fixture(scope="module")
def cancer() -> tuple[Arrays, Arrays]:
    x, y = load_breast_cancer(return_X_y=True)
    return _split((x - x.mean(axis=0)) / x.std(axis=0), y, 350)


def _config(*, seed: int = 7, epochs: int = 3, lr: float = 0.05, mu: float = 0.0, batch: int = 32) -> FitConfig:
    return FitConfig(round=0, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed, proximal_mu=mu)


def _task(info: DataInfo, estimator: str, **kw: Any) -> SklearnTask:
    kw.setdefault("hidden_layers", (16,))
    return SklearnTask(info, estimator=estimator, **kw)  # type: ignore[arg-type]


def _distance(a: Parameters, b: Parameters) -> float:
    return float(np.linalg.norm(a.flatten() - b.flatten()))


# Training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("dataset", ["digits", "cancer"])
def test_training_improves_accuracy_and_keeps_schema(
    estimator: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    train, test = request.getfixturevalue(dataset)
    k = int(max(train.y.max(), test.y.max())) + 1
    task = _task(DataInfo(train.x.shape[1], k), estimator)
    assert isinstance(task, ProbabilisticTask)
    init = task.init_parameters(seed=1)
    before = task.evaluate(init, test)
    result = task.fit(init, train, config=_config(epochs=5), state=MemberState())
    assert result.parameters is not None and result.num_examples == len(train)
    assert result.parameters.schema == init.schema
    after = task.evaluate(result.parameters, test)
    assert after.num_examples == len(test)
    assert after.metrics["accuracy"] >= 0.85
    assert after.metrics["accuracy"] > before.metrics["accuracy"]
    assert after.loss < 0.5 * before.loss
    assert set(result.metrics) == {"train_loss", "train_accuracy"}
    assert result.metrics["train_accuracy"] >= 0.85
    if k == 2:
        assert {"auprc", "recall_at_1pct_fpr"} <= set(after.metrics)


def test_shapes_follow_scikit_learn_conventions() -> None:
    binary, multi = DataInfo(5, 2), DataInfo(5, 4)
    assert _task(binary, "sgd").init_parameters(seed=0).schema.describe() == "coef[1, 5]:<f8, intercept[1]:<f8"
    assert _task(multi, "logistic").init_parameters(seed=0).schema.describe() == ("coef[4, 5]:<f8, intercept[4]:<f8")
    mlp = _task(binary, "mlp", hidden_layers=(3, 2)).init_parameters(seed=0)
    assert {n: tuple(a.shape) for n, a in mlp.items()} == {
        "layers.0.weight": (5, 3),
        "layers.0.bias": (3,),
        "layers.1.weight": (3, 2),
        "layers.1.bias": (2,),
        "layers.2.weight": (2, 1),
        "layers.2.bias": (1,),
    }


def test_init_parameters() -> None:
    info = DataInfo(20, 3)
    linear = _task(info, "sgd").init_parameters(seed=5)
    assert all(not a.any() for a in linear.values())
    task = _task(info, "mlp", hidden_layers=(30,))
    a, b, c = task.init_parameters(seed=5), task.init_parameters(seed=5), task.init_parameters(seed=6)
    assert a.allclose(b) and not a.allclose(c)
    w = a["layers.0.weight"]
    bound = math.sqrt(6.0 / (20 + 30))  # Glorot uniform
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(float(w.mean())) < 0.05 * bound
    w_logistic = _task(info, "mlp", hidden_layers=(30,), activation="logistic").init_parameters(seed=5)
    assert np.abs(w_logistic["layers.0.weight"]).max() <= math.sqrt(2.0 / 50)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_deterministic_by_seed(estimator: str, digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = _task(DataInfo(64, 10), estimator)
    init = task.init_parameters(seed=3)
    r1 = task.fit(init, train, config=_config(seed=11), state=MemberState())
    r2 = task.fit(init, train, config=_config(seed=11), state=MemberState())
    assert r1.parameters is not None and r2.parameters is not None
    assert r1.parameters.allclose(r2.parameters)
    if estimator != "logistic":  # L-BFGS does not shuffle: the seed does not matter
        r3 = task.fit(init, train, config=_config(seed=12), state=MemberState())
        assert r3.parameters is not None and not r1.parameters.allclose(r3.parameters, atol=1e-9)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_fit_starts_from_the_given_parameters(estimator: str, digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = _task(DataInfo(64, 10), estimator)
    start = Parameters({n: a + 0.3 for n, a in task.init_parameters(seed=9).items()})
    tiny = task.fit(start, train, config=_config(lr=1e-7, epochs=1), state=MemberState())
    assert tiny.parameters is not None
    if estimator == "logistic":  # no learning rate: a full solve moves far from any start
        assert _distance(tiny.parameters, start) > 1.0
    else:
        assert _distance(tiny.parameters, start) < 1e-3


def test_mlp_step_matches_backpropagation_by_hand(digits: tuple[Arrays, Arrays]) -> None:
    """One full-batch SGD step (no momentum) against a numpy forward/backward pass."""
    train, _ = digits
    x, y = train.x[:50].astype(np.float64), train.y[:50]
    alpha, lr = 0.01, 0.1
    task = SklearnTask(DataInfo(64, 10), estimator="mlp", hidden_layers=(8,), alpha=alpha, momentum=0.0)
    p = task.init_parameters(seed=4)
    w1, b1, w2, b2 = p["layers.0.weight"], p["layers.0.bias"], p["layers.1.weight"], p["layers.1.bias"]
    z1 = x @ w1 + b1
    a1 = np.maximum(z1, 0.0)
    z2 = a1 @ w2 + b2
    prob = np.exp(z2 - z2.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    d2 = prob - np.eye(10)[y]
    d1 = (d2 @ w2.T) * (z1 > 0)
    n = len(y)
    expected = {
        "layers.0.weight": w1 - lr * (x.T @ d1 + alpha * w1) / n,
        "layers.0.bias": b1 - lr * d1.mean(axis=0),
        "layers.1.weight": w2 - lr * (a1.T @ d2 + alpha * w2) / n,
        "layers.1.bias": b2 - lr * d2.mean(axis=0),
    }
    out = task.fit(p, Arrays(x.astype(np.float32), y), config=_config(epochs=1, lr=lr, batch=n), state=MemberState())
    assert out.parameters is not None
    assert out.parameters.allclose(expected, rtol=1e-9, atol=1e-12)


# Probabilities agree with scikit-learn's own predict_proba --------------------------------------
@pytest.mark.parametrize(
    ("estimator", "dataset"),
    [("sgd", "digits"), ("sgd", "cancer"), ("logistic", "digits"), ("logistic", "cancer"), ("mlp", "digits"),
     ("mlp", "cancer")],
)  # fmt: skip
def test_predict_proba_matches_scikit_learn(estimator: str, dataset: str, request: pytest.FixtureRequest) -> None:
    train, test = request.getfixturevalue(dataset)
    x, y = train.x.astype(np.float64), train.y
    k = int(y.max()) + 1
    if estimator == "mlp":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref: Any = MLPClassifier(hidden_layer_sizes=(6,), max_iter=30, random_state=0).fit(x, y)
        arrays = {}
        for i, (w, b) in enumerate(zip(ref.coefs_, ref.intercepts_, strict=True)):
            arrays[f"layers.{i}.weight"], arrays[f"layers.{i}.bias"] = w, b
        task = _task(DataInfo(x.shape[1], k), "mlp", hidden_layers=(6,))
    else:
        cls = SGDClassifier(loss="log_loss", random_state=0) if estimator == "sgd" else LogisticRegression()
        ref = cls.fit(x, y)
        arrays = {"coef": ref.coef_, "intercept": ref.intercept_}
        task = _task(DataInfo(x.shape[1], k), estimator)
    with np.errstate(all="ignore"):
        expected = ref.predict_proba(test.x.astype(np.float64))
    got = task.predict_proba(Parameters(arrays), test.x)
    assert got.shape == (len(test), k)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-12)


# FedProx -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["sgd", "mlp"])
def test_proximal_step_is_the_closed_form_prox(estimator: str, digits: tuple[Arrays, Arrays]) -> None:
    """After one epoch, w_mu − w_g = (w_0 − w_g) / (1 + η·μ), η = learning rate × updates in the epoch."""
    train, _ = digits
    task = _task(DataInfo(64, 10), estimator)
    g = task.init_parameters(seed=2)
    lr, mu, batch = 0.01, 0.05, 32
    free = task.fit(g, train, config=_config(epochs=1, lr=lr, batch=batch), state=MemberState())
    prox = task.fit(g, train, config=_config(epochs=1, lr=lr, mu=mu, batch=batch), state=MemberState())
    assert free.parameters is not None and prox.parameters is not None
    updates = len(train) if estimator == "sgd" else math.ceil(len(train) / batch)
    shrink = 1.0 / (1.0 + lr * updates * mu)
    expected = {n: g[n] + (free.parameters[n] - g[n]) * shrink for n in g}
    assert prox.parameters.allclose(expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("estimator", ["sgd", "mlp"])
def test_huge_mu_keeps_the_global_model(estimator: str, digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = _task(DataInfo(64, 10), estimator)
    g = task.init_parameters(seed=2)
    free = task.fit(g, train, config=_config(), state=MemberState())
    held = task.fit(g, train, config=_config(mu=1e6), state=MemberState())
    some = task.fit(g, train, config=_config(mu=0.1), state=MemberState())
    assert free.parameters is not None and held.parameters is not None and some.parameters is not None
    d_free, d_some, d_held = (_distance(r, g) for r in (free.parameters, some.parameters, held.parameters))
    assert d_free > 1.0
    assert d_held < 1e-4 * d_free
    assert d_held < d_some < d_free


def test_logistic_refuses_fedprox(digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = _task(DataInfo(64, 10), "logistic")
    with pytest.raises(ConfigurationError, match="logistic"):
        task.fit(task.init_parameters(seed=0), train, config=_config(mu=0.1), state=MemberState())


# Members that lack classes ---------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_member_with_missing_classes(estimator: str, digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    keep = train.y < 3
    member = Arrays(train.x[keep], train.y[keep])
    task = _task(DataInfo(64, 10), estimator)
    init = task.init_parameters(seed=0)
    result = task.fit(init, member, config=_config(), state=MemberState())
    assert result.parameters is not None and result.parameters.schema == init.schema
    proba = task.predict_proba(result.parameters, member.x)
    assert proba.shape == (len(member), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert set(np.unique(proba.argmax(axis=1))) <= {0, 1, 2}
    before = task.predict_proba(init, member.x)[:, 3:].sum(axis=1).mean()
    assert proba[:, 3:].sum(axis=1).mean() < 0.5 * before


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_binary_member_with_a_single_class(estimator: str, cancer: tuple[Arrays, Arrays]) -> None:
    train, _ = cancer
    only = train.y == 1
    member = Arrays(train.x[only], train.y[only])
    task = _task(DataInfo(30, 2), estimator)
    init = task.init_parameters(seed=0)
    result = task.fit(init, member, config=_config(), state=MemberState())
    assert result.parameters is not None and result.parameters.schema == init.schema
    after = task.predict_proba(result.parameters, member.x)[:, 1].mean()
    assert after > max(0.9, task.predict_proba(init, member.x)[:, 1].mean())


# Errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("estimator", "tensor"), [("sgd", "coef"), ("mlp", "layers.1.weight")])
def test_wrong_shape_raises_parameter_error_naming_the_tensor(
    estimator: str, tensor: str, digits: tuple[Arrays, Arrays]
) -> None:
    train, test = digits
    task = _task(DataInfo(64, 10), estimator)
    good = task.init_parameters(seed=0)
    bad = Parameters({**good, tensor: np.zeros((good[tensor].shape[0], 3))})
    with pytest.raises(ParameterError, match=rf"'{tensor}'.*shape \[\d+, 3\]"):
        task.fit(bad, train, config=_config(), state=MemberState())
    with pytest.raises(ParameterError, match=tensor):
        task.evaluate(bad, test)
    missing = Parameters({n: a for n, a in good.items() if n != tensor})
    with pytest.raises(ParameterError, match=tensor):
        task.predict_proba(missing, test.x)


def test_bad_data_raises_data_error(digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = _task(DataInfo(64, 10), "sgd")
    p = task.init_parameters(seed=0)
    with pytest.raises(DataError, match="labels"):
        task.fit(p, Arrays(train.x, train.y + 5), config=_config(), state=MemberState())
    with pytest.raises(DataError, match="features"):
        task.evaluate(p, Arrays(train.x[:, :10], train.y))


def test_empty_member_returns_the_global_parameters() -> None:
    task = _task(DataInfo(4, 3), "mlp")
    p = task.init_parameters(seed=0)
    empty = Arrays(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    result = task.fit(p, empty, config=_config(), state=MemberState())
    assert result.num_examples == 0 and result.parameters is not None and result.parameters.allclose(p)


def test_constructor_validation() -> None:
    with pytest.raises(TaskError, match="num_classes"):
        SklearnTask(DataInfo(3, 1))
    with pytest.raises(TaskError, match="estimator"):
        SklearnTask(DataInfo(3, 2), estimator="svm")  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="alpha"):
        SklearnTask(DataInfo(3, 2), alpha=-1.0)


# Spec factory --------------------------------------------------------------------------------------
def test_factory_builds_the_configured_task() -> None:
    task = make_sklearn_task(
        DataInfo(8, 3), {"estimator": "mlp", "hidden_layers": "6, 4", "activation": "tanh", "alpha": 0}
    )
    assert (task.estimator, task.hidden_layers, task.activation, task.alpha) == ("mlp", (6, 4), "tanh", 0.0)
    assert make_sklearn_task(DataInfo(8, 3), {"estimator": "mlp", "hidden_layers": 5}).hidden_layers == (5,)
    assert make_sklearn_task(DataInfo(8, 3), {}).estimator == "sgd"
    assert make_sklearn_task(DataInfo(8, 3), {"estimator": "logistic", "max_iter": 3}).max_iter == 3


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"learning_rate": 0.1}, "task.options.learning_rate"),
        ({"estimator": "svm"}, "task.options.estimator"),
        ({"estimator": "sgd", "hidden_layers": 4}, "task.options.hidden_layers"),
        ({"estimator": "mlp", "max_iter": 4}, "task.options.max_iter"),
        ({"estimator": "mlp", "hidden_layers": "4,x"}, "task.options.hidden_layers"),
        ({"estimator": "mlp", "hidden_layers": True}, "task.options.hidden_layers"),
        ({"alpha": -0.1}, "task.options.alpha"),
        ({"alpha": "big"}, "task.options.alpha"),
        ({"alpha": float("inf")}, "task.options.alpha"),
        ({"estimator": "mlp", "momentum": 1.5}, "task.options.momentum"),
        ({"estimator": "mlp", "solver": "lbfgs"}, "task.options.solver"),
        ({"estimator": "logistic", "max_iter": 0}, "task.options.max_iter"),
    ],
)
def test_factory_rejects_bad_options(options: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        make_sklearn_task(DataInfo(8, 3), options)
    assert info.value.path == path


def test_mlp_with_adam_and_two_tanh_layers(digits: tuple[Arrays, Arrays]) -> None:
    train, test = digits
    task = make_sklearn_task(
        DataInfo(64, 10), {"estimator": "mlp", "solver": "adam", "hidden_layers": "32,16", "activation": "tanh"}
    )
    init = task.init_parameters(seed=0)
    result = task.fit(init, train, config=_config(epochs=5, lr=0.01), state=MemberState())
    assert result.parameters is not None and result.parameters.schema == init.schema
    assert task.evaluate(result.parameters, test).metrics["accuracy"] >= 0.85

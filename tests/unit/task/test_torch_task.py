"""TorchTask and select_device: training, determinism, FedProx, buffers, errors, CPU path, no-torch import."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, DataError, ParameterError, SpecError, TaskError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, FitConfig, MemberState, ProbabilisticTask
from fedswarm.task.device import select_device

torch = pytest.importorskip("torch")

from fedswarm.task.torch_task import MlpModel, OptimizerSpec, TorchTask, make_torch_mlp_task  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is faster and steadier on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def _config(*, seed: int = 7, epochs: int = 3, lr: float = 0.1, mu: float = 0.0, batch: int = 32) -> FitConfig:
    return FitConfig(round=0, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed, proximal_mu=mu)


def _mlp(info: DataInfo, **options: Any) -> TorchTask:
    return make_torch_mlp_task(info, {"hidden_layers": 16, "device": "cpu", **options})


def _distance(a: Parameters, b: Parameters) -> float:
    return float(np.linalg.norm(a.flatten() - b.flatten()))


# Training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["digits", "cancer"])
def test_training_improves_accuracy_and_keeps_schema(dataset: str, request: pytest.FixtureRequest) -> None:
    train, test = request.getfixturevalue(dataset)
    k = int(train.y.max()) + 1
    task = _mlp(DataInfo(train.x.shape[1], k))
    assert isinstance(task, ProbabilisticTask)
    init = task.init_parameters(seed=1)
    before = task.evaluate(init, test)
    result = task.fit(init, train, config=_config(epochs=5), state=MemberState())
    assert result.parameters is not None and result.num_examples == len(train)
    assert result.parameters.schema == init.schema
    assert set(init) == {"hidden0.weight", "hidden0.bias", "output.weight", "output.bias"}
    assert init["output.weight"].shape == (k, 16) and init["hidden0.weight"].dtype == np.float32
    after = task.evaluate(result.parameters, test)
    assert after.num_examples == len(test)
    assert after.metrics["accuracy"] >= 0.85
    assert after.metrics["accuracy"] > before.metrics["accuracy"]
    assert after.loss < 0.5 * before.loss
    assert set(result.metrics) == {"train_loss", "train_accuracy"}
    assert 0.5 < result.metrics["train_accuracy"] <= 1.0
    if k == 2:
        assert {"auprc", "recall_at_1pct_fpr"} <= set(after.metrics)


def test_init_parameters_are_deterministic_by_seed_and_leave_the_global_rng() -> None:
    task = _mlp(DataInfo(10, 3))
    state = torch.get_rng_state()
    a, b, c = task.init_parameters(seed=4), task.init_parameters(seed=4), task.init_parameters(seed=5)
    assert a.allclose(b) and not a.allclose(c)
    torch.manual_seed(4)  # the same as building the module under the seed by hand
    reference = MlpModel(10, (16,), 3)().state_dict()
    assert a.allclose({n: t.numpy() for n, t in reference.items()})
    torch.set_rng_state(state)


def test_fit_is_deterministic_by_seed(digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = _mlp(DataInfo(64, 10))
    init = task.init_parameters(seed=3)
    rng_before = torch.get_rng_state()
    r1 = task.fit(init, train, config=_config(seed=11), state=MemberState())
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    r2 = task.fit(init, train, config=_config(seed=11), state=MemberState())
    r3 = task.fit(init, train, config=_config(seed=12), state=MemberState())
    assert r1.parameters is not None and r2.parameters is not None and r3.parameters is not None
    assert all(np.array_equal(r1.parameters[n], r2.parameters[n]) for n in init)
    assert r1.metrics == r2.metrics
    assert not r1.parameters.allclose(r3.parameters, atol=1e-6)


def _linear_task() -> TorchTask:
    return TorchTask(lambda: torch.nn.Linear(64, 10), optimizer_fn=OptimizerSpec("sgd", lr=0.1), device="cpu")


def test_fedprox_matches_gradient_steps_by_hand(digits: tuple[Arrays, Arrays]) -> None:
    """Two full-batch SGD steps of softmax regression with μ/2·‖w − w_g‖², against numpy."""
    train, _ = digits
    x, y = train.x[:64].astype(np.float64), train.y[:64]
    lr, mu = 0.5, 0.3
    task = _linear_task()
    g = task.init_parameters(seed=0)
    w, b = g["weight"].astype(np.float64), g["bias"].astype(np.float64)
    w0, b0 = w.copy(), b.copy()
    onehot = np.eye(10)[y]
    for _ in range(2):
        z = x @ w.T + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        d = (p - onehot) / len(y)
        w, b = w - lr * (d.T @ x + mu * (w - w0)), b - lr * (d.sum(axis=0) + mu * (b - b0))
    out = task.fit(
        g, Arrays(x.astype(np.float32), y), config=_config(epochs=2, lr=lr, mu=mu, batch=64), state=MemberState()
    )
    assert out.parameters is not None
    assert out.parameters.allclose({"weight": w, "bias": b}, atol=2e-6)
    plain = task.fit(g, Arrays(x.astype(np.float32), y), config=_config(epochs=2, lr=lr, batch=64), state=MemberState())
    assert plain.parameters is not None and not plain.parameters.allclose(out.parameters, atol=1e-4)


def test_large_mu_keeps_the_global_model(digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    task = make_torch_mlp_task(DataInfo(64, 10), {"hidden_layers": 16, "device": "cpu", "momentum": 0.0})
    g = task.init_parameters(seed=2)
    lr = 0.05
    free = task.fit(g, train, config=_config(lr=lr), state=MemberState())
    held = task.fit(g, train, config=_config(lr=lr, mu=0.95 / lr), state=MemberState())  # lr·μ < 1: stable
    some = task.fit(g, train, config=_config(lr=lr, mu=1.0), state=MemberState())
    assert free.parameters is not None and held.parameters is not None and some.parameters is not None
    d_free, d_some, d_held = (_distance(r, g) for r in (free.parameters, some.parameters, held.parameters))
    assert d_held < 0.1 * d_free
    assert d_held < d_some < d_free


# Learning rate source --------------------------------------------------------------------------------
def test_learning_rate_comes_from_the_round_or_the_optimizer(digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    from_config = _linear_task()
    g = from_config.init_parameters(seed=0)
    frozen = from_config.fit(g, train, config=_config(lr=0.0), state=MemberState())
    assert frozen.parameters is not None and frozen.parameters.allclose(g)
    own = TorchTask(
        lambda: torch.nn.Linear(64, 10),
        optimizer_fn=OptimizerSpec("sgd", lr=0.1),
        device="cpu",
        learning_rate="optimizer",
    )
    moved = own.fit(g, train, config=_config(lr=0.0), state=MemberState())
    assert moved.parameters is not None and _distance(moved.parameters, g) > 0.1


# Buffers and eval mode -----------------------------------------------------------------------------
def _bn_model() -> Any:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 10)
    )


def test_float_buffers_travel_and_integer_buffers_stay_local(digits: tuple[Arrays, Arrays]) -> None:
    train, test = digits
    task = TorchTask(_bn_model, optimizer_fn=OptimizerSpec("sgd", lr=0.05), device="cpu")
    g = task.init_parameters(seed=0)
    assert {"1.running_mean", "1.running_var", "1.weight", "1.bias"} <= set(g)
    assert "1.num_batches_tracked" not in g
    assert not g["1.running_mean"].any() and np.all(g["1.running_var"] == 1.0)
    out = task.fit(g, train, config=_config(epochs=1), state=MemberState())
    assert out.parameters is not None and out.parameters.schema == g.schema
    assert np.abs(out.parameters["1.running_mean"]).max() > 0.01  # statistics were collected
    # eval mode: running statistics and no dropout, so the batch size does not matter
    small = TorchTask(_bn_model, optimizer_fn=OptimizerSpec("sgd"), device="cpu", eval_batch_size=7)
    p1 = task.predict_proba(out.parameters, test.x)
    p2 = small.predict_proba(out.parameters, test.x)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-12)
    assert p1.shape == (len(test), 10) and p1.dtype == np.float64


# Members that lack classes ---------------------------------------------------------------------------
def test_member_with_missing_classes(digits: tuple[Arrays, Arrays]) -> None:
    train, _ = digits
    keep = train.y < 3
    member = Arrays(train.x[keep], train.y[keep])
    task = _mlp(DataInfo(64, 10))
    init = task.init_parameters(seed=0)
    result = task.fit(init, member, config=_config(), state=MemberState())
    assert result.parameters is not None and result.parameters.schema == init.schema
    proba = task.predict_proba(result.parameters, member.x)
    assert set(np.unique(proba.argmax(axis=1))) <= {0, 1, 2}
    assert proba[:, 3:].sum(axis=1).mean() < 0.5 * task.predict_proba(init, member.x)[:, 3:].sum(axis=1).mean()


# Errors --------------------------------------------------------------------------------------------
def test_wrong_shape_raises_parameter_error_naming_the_tensor(digits: tuple[Arrays, Arrays]) -> None:
    train, test = digits
    task = _mlp(DataInfo(64, 10))
    good = task.init_parameters(seed=0)
    bad = Parameters({**good, "hidden0.weight": np.zeros((16, 63), np.float32)})
    with pytest.raises(ParameterError, match=r"'hidden0.weight' has shape \[16, 63\], expected \[16, 64\]"):
        task.fit(bad, train, config=_config(), state=MemberState())
    with pytest.raises(ParameterError, match="hidden0.weight"):
        task.evaluate(bad, test)
    missing = Parameters({n: a for n, a in good.items() if n != "output.bias"})
    with pytest.raises(ParameterError, match="output.bias"):
        task.predict_proba(missing, test.x)


def test_labels_beyond_the_output_width_raise_data_error(digits: tuple[Arrays, Arrays]) -> None:
    train, test = digits
    task = _mlp(DataInfo(64, 10))
    p = task.init_parameters(seed=0)
    with pytest.raises(DataError, match="labels"):
        task.fit(p, Arrays(train.x, train.y + 1), config=_config(), state=MemberState())
    with pytest.raises(DataError, match="labels"):
        task.evaluate(p, Arrays(test.x, test.y + 1))


def test_empty_member_and_empty_evaluation() -> None:
    task = _mlp(DataInfo(4, 3))
    p = task.init_parameters(seed=0)
    empty = Arrays(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    result = task.fit(p, empty, config=_config(), state=MemberState())
    assert result.num_examples == 0 and result.parameters is not None and result.parameters.allclose(p)
    assert task.evaluate(p, empty).num_examples == 0
    assert task.predict_proba(p, empty.x).shape == (0, 3)


def test_task_pickles_for_process_backends(cancer: tuple[Arrays, Arrays]) -> None:
    _, test = cancer
    task = _mlp(DataInfo(30, 2))
    p = task.init_parameters(seed=0)
    before = task.evaluate(p, test)
    clone = pickle.loads(pickle.dumps(task))
    assert clone.evaluate(p, test) == before


# Spec factory --------------------------------------------------------------------------------------
def test_factory_options() -> None:
    deep = make_torch_mlp_task(DataInfo(5, 3), {"hidden_layers": "8,4", "activation": "tanh", "device": "cpu"})
    assert deep.init_parameters(seed=0).schema.describe() == (
        "hidden0.bias[8]:<f4, hidden0.weight[8, 5]:<f4, hidden1.bias[4]:<f4, hidden1.weight[4, 8]:<f4, "
        "output.bias[3]:<f4, output.weight[3, 4]:<f4"
    )
    linear = make_torch_mlp_task(DataInfo(5, 3), {"hidden_layers": "", "device": "cpu"})
    assert set(linear.init_parameters(seed=0)) == {"output.weight", "output.bias"}
    adam = make_torch_mlp_task(DataInfo(5, 3), {"optimizer": "adam", "lr": 0.001, "device": "cpu"})
    assert adam.learning_rate == "optimizer" and adam.optimizer_fn == OptimizerSpec("adam", lr=0.001)
    default = make_torch_mlp_task(DataInfo(5, 3), {})
    assert default.learning_rate == "config" and default.device_preference == "auto"
    assert default.optimizer_fn == OptimizerSpec("sgd", lr=0.01, momentum=0.9)


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"epochs": 3}, "task.options.epochs"),
        ({"hidden_layers": "8,-1"}, "task.options.hidden_layers"),
        ({"activation": "gelu"}, "task.options.activation"),
        ({"optimizer": "adam", "momentum": 0.5}, "task.options.momentum"),
        ({"momentum": 1.0}, "task.options.momentum"),
        ({"lr": 0}, "task.options.lr"),
        ({"weight_decay": -1}, "task.options.weight_decay"),
        ({"device": "tpu"}, "task.options.device"),
        ({"deterministic": "yes"}, "task.options.deterministic"),
    ],
)
def test_factory_rejects_bad_options(options: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        make_torch_mlp_task(DataInfo(5, 3), options)
    assert info.value.path == path


def test_constructor_validation() -> None:
    with pytest.raises(TaskError, match="device"):
        TorchTask(_bn_model, optimizer_fn=OptimizerSpec(), device="tpu")  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="learning_rate"):
        TorchTask(_bn_model, optimizer_fn=OptimizerSpec(), learning_rate="fixed")  # type: ignore[arg-type]


# Device choice ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(cuda: bool, mps: bool, expected: str) -> None:
    assert select_device("auto", cuda_available=cuda, mps_available=mps) == expected


def test_explicit_devices() -> None:
    assert select_device("cpu", cuda_available=True, mps_available=True) == "cpu"
    assert select_device("cuda", cuda_available=True, mps_available=False) == "cuda"
    assert select_device("mps", cuda_available=True, mps_available=True) == "mps"
    with pytest.raises(ConfigurationError, match="'cuda'.*not available"):
        select_device("cuda", cuda_available=False, mps_available=True)
    with pytest.raises(ConfigurationError, match="'mps'.*not available"):
        select_device("mps", cuda_available=True, mps_available=False)
    with pytest.raises(ConfigurationError, match="tpu"):
        select_device("tpu")  # type: ignore[arg-type]


def test_cpu_path() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device() == expected
    task = _mlp(DataInfo(4, 2))
    assert task.device == "cpu"
    assert select_device("cpu") == "cpu"


def test_fedswarm_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import fedswarm.task.torch_task as t, fedswarm.task.device as d\n"
        "from fedswarm.core.errors import TaskError\n"
        "assert d.select_device() == 'cpu'\n"
        "try:\n"
        "    t.TorchTask(lambda: None, optimizer_fn=t.OptimizerSpec())\n"
        "except TaskError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install fedswarm[torch]" in out.stdout

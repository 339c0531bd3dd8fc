"""Any PyTorch ``nn.Module`` as a federated task.

The parameters exchanged are the module's ``state_dict()`` entries with a floating-point dtype, as numpy
arrays under their ``state_dict`` names: the weights *and* the floating-point buffers, so BatchNorm's
``running_mean`` / ``running_var`` travel and are averaged like weights. Integer buffers (BatchNorm's
``num_batches_tracked``) are not exchanged; they keep the value the freshly built module has. bfloat16
tensors travel as float32.

The module must return logits of shape (batch, num_classes); probabilities are their softmax. Training
uses a :class:`~torch.utils.data.DataLoader` over the local arrays, shuffled by a ``torch.Generator``
seeded from ``config.seed``; the global RNG is seeded from it too (dropout) inside a forked RNG state,
so the same seed and parameters give the same result on the same device and the caller's RNG is left
untouched. FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks") adds
μ/2·‖w − w_global‖² over the trainable parameters to every batch loss when ``config.proximal_mu > 0``.

PyTorch is imported lazily: fedswarm imports without it, and building a :class:`TorchTask` without it
raises :class:`~fedswarm.core.errors.TaskError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays
from fedswarm.core.errors import DataError, SpecError, TaskError
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState, Scalar
from fedswarm.task.device import Device, DevicePreference, select_device
from fedswarm.task.metrics import classification_metrics

if TYPE_CHECKING:
    import torch

__all__ = [
    "LearningRateSource",
    "LossFn",
    "MlpActivation",
    "MlpModel",
    "ModelFn",
    "OptimizerFn",
    "OptimizerSpec",
    "TorchOptimizerName",
    "TorchTask",
    "make_torch_mlp_task",
    "require_torch",
]

ModelFn = Callable[[], "torch.nn.Module"]
OptimizerFn = Callable[[Iterable["torch.nn.Parameter"]], "torch.optim.Optimizer"]
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
LearningRateSource = Literal["config", "optimizer"]

_SEED_MOD = 2**64


def require_torch() -> None:
    """Raise :class:`TaskError` with installation advice if PyTorch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise TaskError("PyTorch tasks need PyTorch: pip install fedswarm[torch]") from exc


def _to_numpy(t: torch.Tensor) -> npt.NDArray[Any]:
    import torch

    dtype = torch.float32 if t.dtype == torch.bfloat16 else None
    return t.detach().to("cpu", dtype=dtype, copy=True).numpy()


def _from_numpy(a: npt.NDArray[Any]) -> torch.Tensor:
    import torch

    arr = np.asarray(a)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


@contextlib.contextmanager
def _reproducible(seed: int, *, device: Device, deterministic: bool) -> Iterator[None]:
    """Seed the global RNG inside a forked RNG state; optionally force deterministic kernels meanwhile.

    Deterministic kernels are only requested off the CPU: the CPU kernels a training step uses are
    deterministic already, and the first request costs a one-time import of about two seconds.
    """
    import torch

    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % _SEED_MOD)
        if not deterministic or device == "cpu":
            yield
            return
        was_on = torch.are_deterministic_algorithms_enabled()
        was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)


class TorchTask:
    """A classifier given as a PyTorch module, trained locally with the optimizer it is given.

    Parameters
    ----------
    model_fn
        Builds the module (called once per thread, and by :meth:`init_parameters` under the seed). It must
        return logits of shape (batch, num_classes).
    optimizer_fn
        Builds the optimizer over the module's parameters at the start of every :meth:`fit` (optimizer state
        does not persist across rounds).
    loss_fn
        ``loss_fn(logits, labels)`` returning the mean batch loss; cross-entropy when ``None``.
    device
        ``"auto"`` (CUDA, then Apple MPS, then CPU; see :func:`fedswarm.task.device.select_device`) or an
        explicit device. Resolved on first use.
    learning_rate
        ``"config"`` sets every parameter group's learning rate to the round's ``config.learning_rate``
        (so server-side schedules apply); ``"optimizer"`` keeps the one ``optimizer_fn`` chose.
    eval_batch_size
        Batch size of :meth:`evaluate` and :meth:`predict_proba`.
    deterministic
        On CUDA and MPS, request deterministic kernels (``torch.use_deterministic_algorithms(True,
        warn_only=True)``) while training and restore the previous setting afterwards (CUDA additionally
        needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment for deterministic matrix products).
        The setting is process-wide, as is the global RNG: run concurrent fits in separate processes when
        they must be reproducible.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        *,
        optimizer_fn: OptimizerFn,
        loss_fn: LossFn | None = None,
        device: DevicePreference = "auto",
        learning_rate: LearningRateSource = "config",
        eval_batch_size: int = 1024,
        deterministic: bool = True,
    ) -> None:
        require_torch()
        if device not in get_args(DevicePreference):
            raise TaskError(f"TorchTask device must be one of {list(get_args(DevicePreference))}, got {device!r}")
        if learning_rate not in get_args(LearningRateSource):
            raise TaskError(
                f"TorchTask learning_rate must be one of {list(get_args(LearningRateSource))}, got {learning_rate!r}"
            )
        if eval_batch_size < 1:
            raise TaskError(f"TorchTask eval_batch_size must be >= 1, got {eval_batch_size!r}")
        self.model_fn = model_fn
        self.optimizer_fn = optimizer_fn
        self.loss_fn = loss_fn
        self.device_preference: DevicePreference = device
        self.learning_rate: LearningRateSource = learning_rate
        self.eval_batch_size = int(eval_batch_size)
        self.deterministic = bool(deterministic)
        self._device: Device | None = None
        self._schema: Schema | None = None
        self._local = threading.local()

    # Pickling: the per-thread modules and the resolved device stay behind -----------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_local", "_device"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        require_torch()
        self.__dict__.update(state)
        self._device = None
        self._local = threading.local()

    # Structure ---------------------------------------------------------------------------------
    @property
    def device(self) -> Device:
        """The device type this task computes on."""
        if self._device is None:
            self._device = select_device(self.device_preference)
        return self._device

    def _model(self) -> torch.nn.Module:
        model: torch.nn.Module | None = getattr(self._local, "model", None)
        if model is None:
            import torch

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = self.model_fn().to(self.device)
            self._local.model = model
            self._local.names = tuple(k for k, v in model.state_dict().items() if v.is_floating_point())
        return model

    def _names(self) -> tuple[str, ...]:
        self._model()
        names: tuple[str, ...] = self._local.names
        return names

    def _export(self, model: torch.nn.Module) -> Parameters:
        state = model.state_dict()
        return Parameters({name: _to_numpy(state[name]) for name in self._names()})

    @property
    def schema(self) -> Schema:
        """Names, shapes and dtypes of the exchanged tensors."""
        if self._schema is None:
            self._schema = self._export(self._model()).schema
        return self._schema

    def init_parameters(self, *, seed: int) -> Parameters:
        """The state of a module built by ``model_fn`` after ``torch.manual_seed(seed)``."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % _SEED_MOD)
            model = self.model_fn()
        state = model.state_dict()
        return Parameters({name: _to_numpy(state[name]) for name in self._names()})

    def _load(self, parameters: Parameters, *, who: str) -> torch.nn.Module:
        import torch

        parameters.check_schema(self.schema, who=who)
        model = self._model()
        state = model.state_dict()
        with torch.no_grad():
            for name in self._names():
                state[name].copy_(_from_numpy(parameters[name]))
        return model

    def _input_dtype(self, model: torch.nn.Module) -> torch.dtype:
        import torch

        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    # Prediction --------------------------------------------------------------------------------
    def _logits(self, model: torch.nn.Module, x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        import torch

        if x.ndim != 2:
            raise DataError(f"features must be 2-D, got shape {list(x.shape)}")
        dtype = self._input_dtype(model)
        chunks: list[npt.NDArray[np.float64]] = []
        model.eval()
        with torch.no_grad():
            # at least one (possibly empty) batch, so that the output width is known for empty inputs
            for start in range(0, max(len(x), 1), self.eval_batch_size):
                xb = _from_numpy(x[start : start + self.eval_batch_size]).to(self.device, dtype=dtype)
                out = model(xb)
                if out.ndim != 2 or out.shape[0] != xb.shape[0]:
                    raise TaskError(f"the module must return logits of shape (batch, classes), got {list(out.shape)}")
                chunks.append(out.detach().to("cpu", dtype=torch.float64).numpy())
        return np.concatenate(chunks)

    @staticmethod
    def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = z - z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict_proba(self, parameters: Parameters, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Softmax of the module's logits, shape (len(x), num_classes), in float64."""
        model = self._load(parameters, who="TorchTask.predict_proba parameters")
        return self._softmax(self._logits(model, np.asarray(x)))

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        """Accuracy and cross-entropy (plus AUPRC / recall at 1% FPR for two classes) in eval mode."""
        model = self._load(parameters, who="TorchTask.evaluate parameters")
        proba = self._softmax(self._logits(model, data.x))
        y = np.asarray(data.y, dtype=np.int64)
        self._check_labels(y, proba.shape[1])
        metrics = classification_metrics(y, proba, num_classes=proba.shape[1])
        return EvalResult(num_examples=len(y), loss=metrics["loss"], metrics=metrics)

    @staticmethod
    def _check_labels(y: npt.NDArray[np.int64], num_classes: int) -> None:
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise DataError(
                f"labels must lie in [0, {num_classes}) (the module's output width), "
                f"got range [{int(y.min())}, {int(y.max())}]"
            )

    # Training ----------------------------------------------------------------------------------
    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        """Train from ``parameters`` for ``config.epochs`` epochs of mini-batches on ``data``.

        Metrics: ``train_loss`` (mean data loss over all batches of all epochs, without the proximal term)
        and ``train_accuracy`` (running accuracy over the same batches).
        """
        import torch
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

        model = self._load(parameters, who="TorchTask.fit global parameters")
        n = len(data)
        if data.x.ndim != 2:
            raise DataError(f"features must be 2-D, got shape {list(data.x.shape)}")
        if n == 0 or config.epochs <= 0:
            return FitResult(num_examples=n, parameters=parameters.copy())
        loss_fn: LossFn = self.loss_fn or torch.nn.functional.cross_entropy
        device = torch.device(self.device)
        with _reproducible(config.seed, device=self.device, deterministic=self.deterministic):
            xt = _from_numpy(data.x).to(device, dtype=self._input_dtype(model))
            yt = _from_numpy(np.asarray(data.y, dtype=np.int64)).to(device)
            dataset = TensorDataset(xt, yt)
            generator = torch.Generator().manual_seed(config.seed % _SEED_MOD)
            batches = BatchSampler(
                RandomSampler(dataset, generator=generator),
                batch_size=max(1, config.batch_size),
                drop_last=False,
            )
            loader = DataLoader(dataset, sampler=batches, batch_size=None)
            optimizer = self.optimizer_fn(model.parameters())
            if self.learning_rate == "config":
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate
            mu = float(config.proximal_mu)
            trainable = [p for p in model.parameters() if p.requires_grad]
            anchors = [p.detach().clone() for p in trainable] if mu > 0.0 else []
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            model.train()
            checked = False
            for _ in range(config.epochs):
                for xb, yb in loader:
                    optimizer.zero_grad(set_to_none=True)
                    logits = model(xb)
                    if not checked:
                        if logits.ndim != 2 or logits.shape[0] != xb.shape[0]:
                            raise TaskError(
                                f"the module must return logits of shape (batch, classes), got {list(logits.shape)}"
                            )
                        self._check_labels(np.asarray(data.y), int(logits.shape[1]))
                        checked = True
                    loss = loss_fn(logits, yb)
                    objective = loss
                    if mu > 0.0:
                        prox = sum(((p - a) ** 2).sum() for p, a in zip(trainable, anchors, strict=True))
                        objective = loss + 0.5 * mu * prox
                    objective.backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
                    loss_sum += loss.detach().to(torch.float64) * len(yb)
                    correct += (logits.detach().argmax(dim=1) == yb).sum()
            seen = n * config.epochs
            metrics = {
                "train_loss": float(loss_sum.item()) / seen,
                "train_accuracy": int(correct.item()) / seen,
            }
        new = self._export(model)
        if not new.all_finite():
            raise TaskError("TorchTask training produced non-finite parameters; lower the learning rate")
        return FitResult(num_examples=n, parameters=new, metrics=metrics)


# The built-in ``mlp`` task -----------------------------------------------------------------------

MlpActivation = Literal["relu", "tanh"]
TorchOptimizerName = Literal["sgd", "adam"]


@dataclass(frozen=True, slots=True)
class MlpModel:
    """Builds a fully connected network ``hidden<i>`` → ``act<i>`` → ... → ``output`` (picklable)."""

    num_features: int
    hidden_layers: tuple[int, ...]
    num_classes: int
    activation: MlpActivation = "relu"

    def __call__(self) -> torch.nn.Module:
        import torch

        layers: OrderedDict[str, torch.nn.Module] = OrderedDict()
        width = self.num_features
        for i, h in enumerate(self.hidden_layers):
            layers[f"hidden{i}"] = torch.nn.Linear(width, h)
            layers[f"act{i}"] = torch.nn.ReLU() if self.activation == "relu" else torch.nn.Tanh()
            width = h
        layers["output"] = torch.nn.Linear(width, self.num_classes)
        return torch.nn.Sequential(layers)


@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    """Builds ``torch.optim.SGD`` or ``torch.optim.Adam`` with fixed hyperparameters (picklable)."""

    name: TorchOptimizerName = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __call__(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


_MLP_OPTIONS = frozenset(
    {"hidden_layers", "activation", "optimizer", "lr", "momentum", "weight_decay", "device", "deterministic"}
)


def _option_number(options: Mapping[str, Scalar], key: str, default: float, *, high: float) -> float:
    value = options.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value <= high
    if not ok or not math.isfinite(float(value)):
        raise SpecError(f"task.options.{key}", f"must be a finite number in [0, {high}], got {value!r}")
    return float(value)


def _option_choice(options: Mapping[str, Scalar], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"task.options.{key}", f"must be one of {list(allowed)}, got {value!r}")
    return value


def _option_layers(value: Scalar) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return (value,) if value else ()
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if all(p.isdigit() and int(p) > 0 for p in parts):
            return tuple(int(p) for p in parts)
    raise SpecError(
        "task.options.hidden_layers",
        f"must be an int >= 0 or sizes like '64,32' ('' for none), got {value!r}",
    )


def make_torch_mlp_task(info: DataInfo, options: Mapping[str, Scalar]) -> TorchTask:
    """Spec factory of the built-in PyTorch MLP classifier.

    Options: ``hidden_layers`` (int, or sizes like "64,32", "" or 0 for a linear model; default 64),
    ``activation`` ("relu" | "tanh"), ``optimizer`` ("sgd" | "adam", default "sgd"), ``lr`` (a fixed
    learning rate; when absent the round's ``learning_rate`` is used), ``momentum`` (SGD only, in [0, 1),
    default 0.9), ``weight_decay`` (>= 0, default 0), ``device`` ("auto" | "cpu" | "cuda" | "mps") and
    ``deterministic`` (bool, default true). Unknown options raise :class:`SpecError`.
    """
    for key in options:
        if key not in _MLP_OPTIONS:
            raise SpecError(f"task.options.{key}", f"unknown option for torch mlp; known: {sorted(_MLP_OPTIONS)}")
    if info.num_classes < 2 or info.num_features < 1:
        raise SpecError("task", f"the mlp needs >= 1 feature and >= 2 classes, got {info}")
    optimizer = cast(TorchOptimizerName, _option_choice(options, "optimizer", "sgd", get_args(TorchOptimizerName)))
    if optimizer != "sgd" and "momentum" in options:
        raise SpecError("task.options.momentum", f"applies only to optimizer 'sgd', not {optimizer!r}")
    momentum = _option_number(options, "momentum", 0.9, high=1.0)
    if momentum >= 1.0:
        raise SpecError("task.options.momentum", f"must be < 1, got {momentum!r}")
    lr = _option_number(options, "lr", 0.01, high=math.inf)
    if "lr" in options and lr <= 0.0:
        raise SpecError("task.options.lr", f"must be > 0, got {lr!r}")
    deterministic = options.get("deterministic", True)
    if not isinstance(deterministic, bool):
        raise SpecError("task.options.deterministic", f"must be true or false, got {deterministic!r}")
    model = MlpModel(
        num_features=info.num_features,
        hidden_layers=_option_layers(options.get("hidden_layers", 64)),
        num_classes=info.num_classes,
        activation=cast(MlpActivation, _option_choice(options, "activation", "relu", get_args(MlpActivation))),
    )
    return TorchTask(
        model,
        optimizer_fn=OptimizerSpec(
            optimizer,
            lr=lr,
            momentum=momentum if optimizer == "sgd" else 0.0,
            weight_decay=_option_number(options, "weight_decay", 0.0, high=math.inf),
        ),
        device=cast(DevicePreference, _option_choice(options, "device", "auto", get_args(DevicePreference))),
        learning_rate="optimizer" if "lr" in options else "config",
        deterministic=deterministic,
    )

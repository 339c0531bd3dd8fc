"""scikit-learn models as federated tasks, exchanged through their coefficient arrays.

Three estimators are supported, each trained by scikit-learn itself on a member's local split:

* ``"sgd"``: :class:`~sklearn.linear_model.SGDClassifier` with ``loss="log_loss"`` (one-vs-rest logistic
  regression for more than two classes), one ``partial_fit`` pass per local epoch at the constant learning
  rate ``config.learning_rate``;
* ``"logistic"``: :class:`~sklearn.linear_model.LogisticRegression` (L-BFGS, multinomial for more than two
  classes), warm-started from the global coefficients and bounded to ``max_iter`` iterations per epoch;
* ``"mlp"``: :class:`~sklearn.neural_network.MLPClassifier`, one ``partial_fit`` pass per epoch with
  mini-batches of ``config.batch_size``.

The parameters are scikit-learn's own arrays under stable names: ``coef`` (classes × features) and
``intercept`` for the linear models, ``layers.<i>.weight`` (fan-in × fan-out, scikit-learn's ``coefs_``
orientation) and ``layers.<i>.bias`` for the MLP. As in scikit-learn, a two-class problem has a single
output row (``coef`` of shape (1, features), one MLP output unit). Every member declares all
``num_classes`` classes to scikit-learn, so a member that lacks some classes still produces arrays of the
federation's shapes.

FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks") cannot be put inside
scikit-learn's solvers; for ``"sgd"`` and ``"mlp"`` its proximal term μ/2·‖w − w_global‖² is applied as a
proximal step after each local epoch (forward–backward splitting), ``w ← (w + η·μ·w_global) / (1 + η·μ)``
with ``η`` the learning rate times the number of updates in the epoch. ``"logistic"`` refuses μ > 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, DataError, SpecError, TaskError
from fedswarm.core.parameters import Parameters, Schema, TensorSpec
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState, Scalar
from fedswarm.task.metrics import classification_metrics

__all__ = ["Activation", "Estimator", "MlpSolver", "SklearnTask", "make_sklearn_task"]

Estimator = Literal["sgd", "logistic", "mlp"]
Activation = Literal["relu", "tanh", "logistic", "identity"]
MlpSolver = Literal["sgd", "adam"]

_F64 = np.dtype(np.float64)


def _random_state(seed: int) -> np.random.RandomState:
    """A legacy ``RandomState`` (what scikit-learn consumes) derived from an arbitrary integer seed."""
    return np.random.RandomState(np.random.MT19937(np.random.SeedSequence(seed % 2**128)))


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _activate(z: npt.NDArray[np.float64], activation: Activation) -> npt.NDArray[np.float64]:
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "tanh":
        return np.tanh(z)
    if activation == "logistic":
        return _sigmoid(z)
    return z


class SklearnTask:
    """A scikit-learn classifier trained federatedly through its coefficient arrays.

    Parameters
    ----------
    info
        Number of features and of classes (at least two).
    estimator
        ``"sgd"`` (SGDClassifier, log loss), ``"logistic"`` (LogisticRegression, L-BFGS) or ``"mlp"``
        (MLPClassifier).
    alpha
        L2 strength. For ``"sgd"`` and ``"mlp"`` it is scikit-learn's ``alpha``; for ``"logistic"`` it is
        converted to ``C = 1 / (alpha · n_train)`` so that all three minimize mean loss + alpha/2·‖w‖²
        (``alpha=0`` means no penalty).
    hidden_layers
        Hidden layer sizes of the MLP.
    activation
        Hidden activation of the MLP; the Glorot bound of :meth:`init_parameters` follows scikit-learn
        (gain 2 instead of 6 for ``"logistic"``).
    solver
        MLP optimizer. Its state (momentum, Adam moments) starts afresh at every round.
    momentum
        Momentum of the MLP's ``"sgd"`` solver (Nesterov, as scikit-learn's default).
    max_iter
        L-BFGS iterations per local epoch for ``"logistic"``.
    """

    def __init__(
        self,
        info: DataInfo,
        *,
        estimator: Estimator = "sgd",
        alpha: float = 1e-4,
        hidden_layers: tuple[int, ...] = (64,),
        activation: Activation = "relu",
        solver: MlpSolver = "sgd",
        momentum: float = 0.9,
        max_iter: int = 10,
    ) -> None:
        if info.num_classes < 2:
            raise TaskError(f"SklearnTask needs num_classes >= 2, got {info.num_classes}")
        if info.num_features < 1:
            raise TaskError(f"SklearnTask needs num_features >= 1, got {info.num_features}")
        if estimator not in get_args(Estimator):
            raise TaskError(f"SklearnTask estimator must be one of {get_args(Estimator)}, got {estimator!r}")
        if activation not in get_args(Activation):
            raise TaskError(f"SklearnTask activation must be one of {get_args(Activation)}, got {activation!r}")
        if solver not in get_args(MlpSolver):
            raise TaskError(f"SklearnTask solver must be one of {get_args(MlpSolver)}, got {solver!r}")
        if not alpha >= 0.0 or not math.isfinite(alpha):
            raise TaskError(f"SklearnTask alpha must be a finite number >= 0, got {alpha!r}")
        if not 0.0 <= momentum <= 1.0:
            raise TaskError(f"SklearnTask momentum must be in [0, 1], got {momentum!r}")
        if max_iter < 1:
            raise TaskError(f"SklearnTask max_iter must be >= 1, got {max_iter!r}")
        if any(h < 1 for h in hidden_layers):
            raise TaskError(f"SklearnTask hidden_layers must be positive, got {hidden_layers!r}")
        self.info = info
        self.estimator: Estimator = estimator
        self.alpha = float(alpha)
        self.hidden_layers = tuple(int(h) for h in hidden_layers)
        self.activation: Activation = activation
        self.solver: MlpSolver = solver
        self.momentum = float(momentum)
        self.max_iter = int(max_iter)
        self.classes = np.arange(info.num_classes)
        self.num_outputs = 1 if info.num_classes == 2 else info.num_classes
        self.schema = Schema(tuple(sorted(self._specs(), key=lambda t: t.name)))

    # Structure ---------------------------------------------------------------------------------
    def _layer_units(self) -> list[int]:
        return [self.info.num_features, *self.hidden_layers, self.num_outputs]

    def _specs(self) -> list[TensorSpec]:
        if self.estimator != "mlp":
            k, d = self.num_outputs, self.info.num_features
            return [TensorSpec("coef", (k, d), _F64.str), TensorSpec("intercept", (k,), _F64.str)]
        units = self._layer_units()
        specs = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(units)):
            specs.append(TensorSpec(f"layers.{i}.weight", (fan_in, fan_out), _F64.str))
            specs.append(TensorSpec(f"layers.{i}.bias", (fan_out,), _F64.str))
        return specs

    def _layers(self, parameters: Parameters) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        n = len(self.hidden_layers) + 1
        return [(parameters[f"layers.{i}.weight"], parameters[f"layers.{i}.bias"]) for i in range(n)]

    def init_parameters(self, *, seed: int) -> Parameters:
        """Zeros for the linear models; for the MLP, Glorot-uniform weights and biases drawn from ``seed``."""
        if self.estimator != "mlp":
            return Parameters({s.name: np.zeros(s.shape, dtype=_F64) for s in self.schema.tensors})
        rng = _random_state(seed)
        gain = 2.0 if self.activation == "logistic" else 6.0
        out: dict[str, npt.NDArray[np.float64]] = {}
        units = self._layer_units()
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(units)):
            bound = math.sqrt(gain / (fan_in + fan_out))
            out[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (fan_in, fan_out))
            out[f"layers.{i}.bias"] = rng.uniform(-bound, bound, fan_out)
        return Parameters(out)

    # Data --------------------------------------------------------------------------------------
    def _xy(self, data: Arrays) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        x = np.ascontiguousarray(data.x, dtype=np.float64)
        y = np.asarray(data.y, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.info.num_features:
            raise DataError(f"features have shape {list(x.shape)}, expected (n, {self.info.num_features})")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.info.num_classes):
            raise DataError(
                f"labels must lie in [0, {self.info.num_classes}), got range [{int(y.min())}, {int(y.max())}]"
            )
        return x, y

    # Prediction --------------------------------------------------------------------------------
    def _proba(self, parameters: Parameters, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.estimator != "mlp":
            z = x @ parameters["coef"].T + parameters["intercept"]
            if self.num_outputs == 1:
                p1 = _sigmoid(z[:, 0])
                return np.stack([1.0 - p1, p1], axis=1)
            if self.estimator == "logistic":
                return _softmax(z)
            p = _sigmoid(z)  # one-vs-rest, normalized as scikit-learn's SGDClassifier.predict_proba
            p /= p.sum(axis=1, keepdims=True)
            return p
        a = x
        layers = self._layers(parameters)
        for w, b in layers[:-1]:
            a = _activate(a @ w + b, self.activation)
        w, b = layers[-1]
        z = a @ w + b
        if self.num_outputs == 1:
            p1 = _sigmoid(z[:, 0])
            return np.stack([1.0 - p1, p1], axis=1)
        return _softmax(z)

    def predict_proba(self, parameters: Parameters, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Class probabilities of shape (len(x), num_classes), computed from ``parameters``."""
        parameters.check_schema(self.schema, who="SklearnTask.predict_proba parameters")
        xx = np.ascontiguousarray(x, dtype=np.float64)
        if xx.ndim != 2 or xx.shape[1] != self.info.num_features:
            raise DataError(f"features have shape {list(xx.shape)}, expected (n, {self.info.num_features})")
        return self._proba(parameters, xx)

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        """Accuracy, cross-entropy (and AUPRC / recall at 1% FPR for two classes) on ``data``."""
        parameters.check_schema(self.schema, who="SklearnTask.evaluate parameters")
        x, y = self._xy(data)
        metrics = classification_metrics(y, self._proba(parameters, x), num_classes=self.info.num_classes)
        return EvalResult(num_examples=len(y), loss=metrics["loss"], metrics=metrics)

    # Training ----------------------------------------------------------------------------------
    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        """Train from ``parameters`` on ``data``; metrics are ``train_loss`` and ``train_accuracy``.

        They are measured on the local training split with the returned parameters.
        """
        parameters.check_schema(self.schema, who="SklearnTask.fit global parameters")
        x, y = self._xy(data)
        if config.proximal_mu > 0.0 and self.estimator == "logistic":
            raise ConfigurationError(
                "task estimator 'logistic' cannot apply FedProx (proximal_mu > 0); use 'sgd' or 'mlp'"
            )
        if len(y) == 0 or config.epochs <= 0:
            return FitResult(num_examples=len(y), parameters=parameters.copy())
        if self.estimator == "sgd":
            new = self._fit_sgd(parameters, x, y, config)
        elif self.estimator == "logistic":
            new = self._fit_logistic(parameters, x, y, config)
        else:
            new = self._fit_mlp(parameters, x, y, config)
        if not new.all_finite():
            raise TaskError(f"SklearnTask ({self.estimator}) produced non-finite parameters; lower the learning rate")
        m = classification_metrics(y, self._proba(new, x), num_classes=self.info.num_classes)
        return FitResult(
            num_examples=len(y),
            parameters=new,
            metrics={"train_loss": m["loss"], "train_accuracy": m["accuracy"]},
        )

    @staticmethod
    def _proximal_step(
        arrays: list[npt.NDArray[np.float64]], anchors: list[npt.NDArray[np.float64]], eta_mu: float
    ) -> None:
        """In place: the proximal operator of μ/2·‖w − anchor‖² with step η, ``(w + ημ·anchor)/(1 + ημ)``."""
        for w, w0 in zip(arrays, anchors, strict=True):
            w += eta_mu * w0
            w /= 1.0 + eta_mu

    def _fit_sgd(
        self, parameters: Parameters, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], config: FitConfig
    ) -> Parameters:
        from sklearn.linear_model import SGDClassifier

        est = SGDClassifier(
            loss="log_loss",
            alpha=self.alpha,
            learning_rate="constant",
            eta0=config.learning_rate,
            shuffle=True,
            random_state=_random_state(config.seed),
            tol=None,
        )
        coef0, intercept0 = parameters["coef"], parameters["intercept"]
        est.coef_ = np.array(coef0, dtype=np.float64, order="C")
        est.intercept_ = np.array(intercept0, dtype=np.float64)
        eta_mu = config.learning_rate * len(y) * config.proximal_mu
        for _ in range(config.epochs):
            est.partial_fit(x, y, classes=self.classes)
            if eta_mu > 0.0:
                coef = np.array(est.coef_, dtype=np.float64, order="C")
                intercept = np.array(est.intercept_, dtype=np.float64)
                self._proximal_step([coef, intercept], [coef0, intercept0], eta_mu)
                est.coef_, est.intercept_ = coef, intercept
        return Parameters({"coef": np.array(est.coef_), "intercept": np.array(est.intercept_)})

    def _fit_logistic(
        self, parameters: Parameters, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], config: FitConfig
    ) -> Parameters:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        n = len(y)
        c = math.inf if self.alpha == 0.0 else 1.0 / (self.alpha * n)
        est = LogisticRegression(
            C=c,
            solver="lbfgs",
            max_iter=self.max_iter * config.epochs,
            warm_start=True,
            random_state=config.seed % 2**32,
        )
        est.coef_ = np.array(parameters["coef"], dtype=np.float64, order="C")
        est.intercept_ = np.array(parameters["intercept"], dtype=np.float64)
        # LogisticRegression learns the classes present in y; declare the absent ones with zero-weight rows
        # so that the coefficient shapes are the federation's (the rows do not change the objective).
        missing = np.setdiff1d(self.classes, y)
        weight = np.ones(n, dtype=np.float64)
        if len(missing):
            x = np.vstack([x, np.zeros((len(missing), x.shape[1]))])
            y = np.concatenate([y, missing])
            weight = np.concatenate([weight, np.zeros(len(missing))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x, y, sample_weight=weight)
        return Parameters({"coef": np.array(est.coef_), "intercept": np.array(est.intercept_)})

    def _fit_mlp(
        self, parameters: Parameters, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], config: FitConfig
    ) -> Parameters:
        from sklearn.neural_network import MLPClassifier
        from sklearn.preprocessing import LabelBinarizer

        n = len(y)
        batch = max(1, min(config.batch_size, n))
        est = MLPClassifier(
            hidden_layer_sizes=self.hidden_layers,
            activation=self.activation,
            solver=self.solver,
            alpha=self.alpha,
            batch_size=batch,
            learning_rate="constant",
            learning_rate_init=config.learning_rate,
            momentum=self.momentum,
            shuffle=True,
            random_state=_random_state(config.seed),
        )
        # scikit-learn offers no public way to start partial_fit from given weights: set up the state its
        # first call would create (label binarizer over all classes, output activation, loss bookkeeping)
        # and then install the global arrays. tests/unit/task/test_sklearn_task.py pins this behaviour.
        binarizer = LabelBinarizer().fit(self.classes)
        est.classes_ = self.classes
        est._label_binarizer = binarizer
        est.n_features_in_ = self.info.num_features
        est._random_state = np.random.RandomState(0)
        est._initialize(binarizer.transform(self.classes), self._layer_units(), _F64)
        anchors = self._layers(parameters)
        est.coefs_ = [np.array(w, dtype=np.float64) for w, _ in anchors]
        est.intercepts_ = [np.array(b, dtype=np.float64) for _, b in anchors]
        anchor_list = [w for w, _ in anchors] + [b for _, b in anchors]
        eta_mu = config.learning_rate * math.ceil(n / batch) * config.proximal_mu
        for _ in range(config.epochs):
            est.partial_fit(x, y, classes=self.classes)
            if eta_mu > 0.0:
                self._proximal_step(list(est.coefs_) + list(est.intercepts_), anchor_list, eta_mu)
        out: dict[str, npt.NDArray[np.float64]] = {}
        for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
            out[f"layers.{i}.weight"] = np.array(w)
            out[f"layers.{i}.bias"] = np.array(b)
        return Parameters(out)


_OPTIONS: dict[str, tuple[Estimator, ...]] = {
    "estimator": get_args(Estimator),
    "alpha": get_args(Estimator),
    "hidden_layers": ("mlp",),
    "activation": ("mlp",),
    "solver": ("mlp",),
    "momentum": ("mlp",),
    "max_iter": ("logistic",),
}


def _number(options: Mapping[str, Scalar], key: str, default: float, *, high: float) -> float:
    value = options.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value <= high
    if not ok or not math.isfinite(float(value)):
        raise SpecError(f"task.options.{key}", f"must be a finite number in [0, {high}], got {value!r}")
    return float(value)


def _choice(options: Mapping[str, Scalar], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"task.options.{key}", f"must be one of {list(allowed)}, got {value!r}")
    return value


def _hidden_layers(value: Scalar) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value,)
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if all(p.isdigit() and int(p) > 0 for p in parts):
            return tuple(int(p) for p in parts)
    raise SpecError("task.options.hidden_layers", f"must be a positive int or sizes like '64,32', got {value!r}")


def make_sklearn_task(info: DataInfo, options: Mapping[str, Scalar]) -> SklearnTask:
    """Spec factory for :class:`SklearnTask`.

    Options: ``estimator`` ("sgd" | "logistic" | "mlp", default "sgd"), ``alpha`` (float >= 0, default
    1e-4); for "mlp": ``hidden_layers`` (int or "64,32", default 64), ``activation`` ("relu" | "tanh" |
    "logistic" | "identity"), ``solver`` ("sgd" | "adam"), ``momentum`` (in [0, 1], default 0.9); for
    "logistic": ``max_iter`` (L-BFGS iterations per epoch, default 10). An unknown option, or one that does
    not apply to the chosen estimator, raises :class:`SpecError`.
    """
    estimator = _choice(options, "estimator", "sgd", get_args(Estimator))
    for key in options:
        if key not in _OPTIONS:
            raise SpecError(f"task.options.{key}", f"unknown option for sklearn; known: {sorted(_OPTIONS)}")
        if estimator not in _OPTIONS[key]:
            raise SpecError(
                f"task.options.{key}", f"applies only to estimator {list(_OPTIONS[key])}, not {estimator!r}"
            )
    max_iter = options.get("max_iter", 10)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise SpecError("task.options.max_iter", f"must be an int >= 1, got {max_iter!r}")
    return SklearnTask(
        info,
        estimator=cast(Estimator, estimator),
        alpha=_number(options, "alpha", 1e-4, high=math.inf),
        hidden_layers=_hidden_layers(options.get("hidden_layers", 64)),
        activation=cast(Activation, _choice(options, "activation", "relu", get_args(Activation))),
        solver=cast(MlpSolver, _choice(options, "solver", "sgd", get_args(MlpSolver))),
        momentum=_number(options, "momentum", 0.9, high=1.0),
        max_iter=max_iter,
    )

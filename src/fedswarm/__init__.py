"""fedswarm: decentralized AI — federated training with a verifiable ledger, privacy accounting and
robust aggregation. The public API is what ``__all__`` lists; everything else may change."""

from __future__ import annotations

from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import (
    ConfigurationError,
    DataError,
    FedswarmError,
    ParameterError,
    RoundAborted,
    SpecError,
    TaskError,
    UpdateRejected,
    VerificationError,
)
from fedswarm.core.parameters import Parameters, Schema, TensorSpec
from fedswarm.core.task import (
    DataInfo,
    EvalResult,
    FitConfig,
    FitResult,
    MemberState,
    ProbabilisticTask,
    Task,
)
from fedswarm.task.metrics import classification_metrics

__version__ = "0.1.0"

__all__ = [
    "Arrays",
    "ConfigurationError",
    "DataError",
    "DataInfo",
    "EvalResult",
    "FedswarmError",
    "FitConfig",
    "FitResult",
    "LocalData",
    "MemberState",
    "ParameterError",
    "Parameters",
    "ProbabilisticTask",
    "RoundAborted",
    "Schema",
    "SpecError",
    "Task",
    "TaskError",
    "TensorSpec",
    "UpdateRejected",
    "VerificationError",
    "__version__",
    "classification_metrics",
]

"""Classification metrics computed from class probabilities.

Pure functions, vectorized, with no scikit-learn dependency in the hot path (they run every round on
every member's test split). Binary problems additionally get the area under the precision-recall curve
(average precision, as scikit-learn's ``average_precision_score`` defines it) and the recall at a 1%
false-positive rate, the numbers a fraud team reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["average_precision", "classification_metrics", "cross_entropy", "recall_at_fpr"]

_EPS = 1e-12


def cross_entropy(y: npt.NDArray[Any], proba: npt.NDArray[Any]) -> float:
    """Mean negative log-likelihood of the true labels."""
    if len(y) == 0:
        return float("nan")
    p = proba[np.arange(len(y)), y]
    return float(-np.log(np.maximum(p, _EPS)).mean())


def average_precision(y_true: npt.NDArray[Any], score: npt.NDArray[Any]) -> float:
    """Average precision (AUPRC, step-wise, ties grouped) of binary labels given positive-class scores."""
    pos = int(np.count_nonzero(y_true))
    if pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    t = y_true[order].astype(np.float64)
    # group ties: evaluate precision/recall only at the last index of each distinct score
    distinct = np.flatnonzero(np.diff(s)) if len(s) > 1 else np.zeros(0, dtype=np.intp)
    last = np.concatenate([distinct, [len(s) - 1]])
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / pos
    recall_prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - recall_prev) * precision))


def recall_at_fpr(y_true: npt.NDArray[Any], score: npt.NDArray[Any], *, fpr: float = 0.01) -> float:
    """Largest recall reachable with a threshold whose false-positive rate is at most ``fpr``."""
    pos = int(np.count_nonzero(y_true))
    neg = len(y_true) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    t = y_true[order]
    distinct = np.flatnonzero(np.diff(s)) if len(s) > 1 else np.zeros(0, dtype=np.intp)
    last = np.concatenate([distinct, [len(s) - 1]])
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    ok = fp / neg <= fpr
    return float(tp[ok].max() / pos) if ok.any() else 0.0


def classification_metrics(y: npt.NDArray[Any], proba: npt.NDArray[Any], *, num_classes: int) -> dict[str, float]:
    """Accuracy and cross-entropy loss; for two classes also ``auprc`` and ``recall_at_1pct_fpr``."""
    if len(y) == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    out = {
        "accuracy": float(np.mean(np.argmax(proba, axis=1) == y)),
        "loss": cross_entropy(y, proba),
    }
    if num_classes == 2:
        out["auprc"] = average_precision(y, proba[:, 1])
        out["recall_at_1pct_fpr"] = recall_at_fpr(y, proba[:, 1], fpr=0.01)
    return out

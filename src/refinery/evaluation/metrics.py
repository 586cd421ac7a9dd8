"""Scores of one model on one labelled set: accuracy, macro-F1, per-class scores, confusion matrix, latency.

This module is where the project's classification scores are defined, on scikit-learn:

- :func:`macro_f1` is the one macro-F1. The Trainer's best-epoch metric (``refinery.training``),
  :func:`classification_metrics` (the gate's headline numbers) and
  :func:`refinery.evaluation.slices.slice_metrics` all call it. It averages over every declared class:
  a class that is never predicted has precision 0, a class absent from the rows has recall 0
  (``zero_division=0``), so a declared class missing from the data counts with F1 0.
- The paired bootstrap (:mod:`refinery.evaluation.significance`) scores thousands of resamples with its
  own vectorised macro-F1, the one place where scikit-learn per resample is measurably too slow
  (``bench/gate.py`` prints both); a test holds it equal to :func:`macro_f1`.
- Scores of class probabilities (log loss, ROC and precision-recall curves, calibration) live in
  :mod:`refinery.evaluation.curves`.

scikit-learn is imported inside the functions, so importing the evaluation package stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from refinery.errors import DataError
from refinery.evaluation.checks import as_finite, as_indices, check_k, same_length
from refinery.results import Record


@dataclass(frozen=True)
class SliceScore(Record):
    """Scores of one slice of the test rows.

    Attributes:
        n: Rows in the slice.
        accuracy: Share of the slice's rows predicted right.
        macro_f1: Macro-F1 over all ``k`` declared classes, as :func:`macro_f1` (a class absent from the
            slice counts with F1 0, so small slices score low).
    """

    n: int
    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class ModelMetrics(Record):
    """Scores of one model on one labelled set.

    Attributes:
        accuracy: Share of rows whose prediction equals the true label.
        macro_f1: Unweighted mean of the per-class F1 over every declared label.
        per_class: Label -> ``{"precision", "recall", "f1", "support"}`` (support is the true-row count).
        confusion_matrix: Counts, rows are true labels and columns predicted labels, both in ``labels`` order.
        n: Number of rows scored.
        labels: The label order used for ``confusion_matrix``.
        log_loss: Mean negative log-probability of the true class (None without probabilities).
        ece: Expected calibration error of the top-class probability (None without probabilities).
        roc_auc: Area under the ROC curve, binary tasks (the second label is the positive class).
        average_precision: Area under the precision-recall curve, binary tasks.
        mean_latency_ms: Mean time to predict one text alone (None when not measured).
        p95_latency_ms: 95th percentile of that time.
        slices: Slice column (or ``length``) -> value -> the slice's scores.
    """

    accuracy: float
    macro_f1: float
    # int | float: the support is a count and stays an int through JSON.
    per_class: dict[str, dict[str, int | float]]
    confusion_matrix: list[list[int]]
    n: int
    labels: tuple[str, ...] = field(default=())
    log_loss: float | None = None
    ece: float | None = None
    roc_auc: float | None = None
    average_precision: float | None = None
    mean_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    slices: dict[str, dict[str, SliceScore]] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        """A headline metric by its gate name (``accuracy``, ``macro_f1``, ``log_loss``, ...)."""
        if metric not in _HEADLINE:
            raise KeyError(f"unknown metric {metric!r}; known: {', '.join(_HEADLINE)}")
        value = getattr(self, metric)
        return float(value) if value is not None else None

    def headline(self) -> dict[str, float]:
        """Every headline metric that was measured, flat."""
        measured = {metric: self.value(metric) for metric in _HEADLINE}
        return {metric: value for metric, value in measured.items() if value is not None}


_HEADLINE = (
    "accuracy",
    "macro_f1",
    "log_loss",
    "ece",
    "roc_auc",
    "average_precision",
    "mean_latency_ms",
    "p95_latency_ms",
)


def macro_f1(true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, k: int) -> float:
    """Macro-F1 of one set of predictions, averaged over all ``k`` declared classes.

    scikit-learn's ``f1_score(average="macro", labels=range(k), zero_division=0)``.

    Args:
        true_idx: True class indices, shape ``(n,)``.
        pred_idx: Predicted class indices, shape ``(n,)``.
        k: Number of declared classes; a class never predicted has precision 0, one absent has recall 0.

    Raises:
        DataError: The inputs are empty, differ in length, or hold an index outside ``0..k-1``.
    """
    from sklearn.metrics import f1_score

    k = check_k(k)
    true = as_indices(true_idx, k, "true_idx")
    pred = as_indices(pred_idx, k, "pred_idx")
    same_length(("true_idx", true.shape[0]), ("pred_idx", pred.shape[0]))
    return float(f1_score(true, pred, labels=list(range(k)), average="macro", zero_division=0))


def _indices(values: Sequence[str], index: Mapping[str, int], what: str) -> list[int]:
    out = []
    for value in values:
        key = str(value)
        if key not in index:
            raise DataError(
                f"{what} contains label {key!r}, which is not one of the declared labels {list(index)}"
            )
        out.append(index[key])
    return out


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> ModelMetrics:
    """Score predictions against true labels.

    Args:
        y_true: True labels, one per row (compared as strings).
        y_pred: Predicted labels, aligned with ``y_true``.
        labels: The declared label set in class-index order; it fixes the confusion-matrix order and the
            classes macro-F1 averages over (a declared class missing from the data still counts, with F1 0).

    Returns:
        ModelMetrics for the rows given.

    Raises:
        DataError: The inputs differ in length, are empty, or hold a label outside ``labels``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = tuple(str(label) for label in labels)
    if len(set(labels)) != len(labels) or not labels:
        raise DataError(f"labels must be distinct and non-empty, got {list(labels)}")
    if len(y_true) != len(y_pred):
        raise DataError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise DataError("cannot compute metrics on an empty set of predictions")

    index = {label: i for i, label in enumerate(labels)}
    true_idx = np.asarray(_indices(y_true, index, "y_true"), dtype=np.int64)
    pred_idx = np.asarray(_indices(y_pred, index, "y_pred"), dtype=np.int64)
    classes = list(range(len(labels)))
    matrix = confusion_matrix(true_idx, pred_idx, labels=classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        true_idx, pred_idx, labels=classes, zero_division=0
    )
    per_class: dict[str, dict[str, int | float]] = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return ModelMetrics(
        accuracy=float(np.trace(matrix) / len(true_idx)),
        macro_f1=macro_f1(true_idx, pred_idx, len(labels)),
        per_class=per_class,
        confusion_matrix=matrix.astype(int).tolist(),
        n=len(true_idx),
        labels=labels,
    )


@dataclass(frozen=True)
class LatencySummary(Record):
    """Latency of a batch of requests or predictions.

    Attributes:
        mean_ms: Mean latency in milliseconds.
        p95_ms: 95th percentile in milliseconds (linear interpolation between order statistics).
        n: Number of measurements.
    """

    mean_ms: float
    p95_ms: float
    n: int


def latency_summary(seconds: npt.ArrayLike) -> LatencySummary:
    """Mean and 95th-percentile latency of measurements given in seconds.

    Raises:
        DataError: ``seconds`` is empty, not 1-D, or holds a negative or non-finite value.
    """
    values = as_finite(seconds, "seconds")
    negative = values < 0
    if negative.any():
        pos = int(np.flatnonzero(negative)[0])
        raise DataError(f"seconds[{pos}] = {values[pos]} is negative")
    return LatencySummary(
        mean_ms=float(values.mean() * 1000.0),
        p95_ms=float(np.quantile(values, 0.95) * 1000.0),
        n=int(values.shape[0]),
    )

"""Classification metrics computed from label strings: accuracy, macro-F1, per-class scores, confusion matrix.

Computed here with numpy rather than scikit-learn so the numbers are defined in one place (a class that
is never predicted has precision 0, a class absent from the test set has recall 0) and so importing the
evaluation package stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.errors import DataError
from refinery.evaluation.stats import SliceScore
from refinery.results import to_jsonable, write_json


@dataclass(frozen=True)
class ModelMetrics:
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
    per_class: dict[str, dict[str, float]]
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return to_jsonable(self)

    def write_json(self, path: str | Path) -> Path:
        """Write the metrics as JSON, atomically."""
        return write_json(self, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetrics:
        """Rebuild metrics from :meth:`to_dict` output."""
        return cls(
            accuracy=float(data["accuracy"]),
            macro_f1=float(data["macro_f1"]),
            per_class={
                str(label): {
                    "precision": float(scores["precision"]),
                    "recall": float(scores["recall"]),
                    "f1": float(scores["f1"]),
                    "support": int(scores["support"]),
                }
                for label, scores in data["per_class"].items()
            },
            confusion_matrix=[[int(v) for v in row] for row in data["confusion_matrix"]],
            n=int(data["n"]),
            labels=tuple(str(v) for v in data.get("labels", ())),
            **{name: _optional(data.get(name)) for name in _OPTIONAL},
            slices={
                str(column): {str(value): SliceScore.from_dict(score) for value, score in scores.items()}
                for column, scores in (data.get("slices") or {}).items()
            },
        )


_OPTIONAL = ("log_loss", "ece", "roc_auc", "average_precision", "mean_latency_ms", "p95_latency_ms")
_HEADLINE = ("accuracy", "macro_f1", *_OPTIONAL)


def _optional(value: Any) -> float | None:
    return float(value) if value is not None else None


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
    import numpy as np

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
    k = len(labels)
    matrix = np.bincount(true_idx * k + pred_idx, minlength=k * k).reshape(k, k)

    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)

    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return ModelMetrics(
        accuracy=float(tp.sum() / len(true_idx)),
        macro_f1=float(f1.mean()),
        per_class=per_class,
        confusion_matrix=matrix.astype(int).tolist(),
        n=len(true_idx),
        labels=labels,
    )

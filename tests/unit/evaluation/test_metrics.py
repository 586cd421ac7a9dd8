"""refinery.evaluation.metrics: macro_f1, classification_metrics and latency_summary, on constructed
predictions with hand-computed values and against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refinery.errors import DataError
from refinery.evaluation.metrics import (
    LatencySummary,
    ModelMetrics,
    classification_metrics,
    latency_summary,
    macro_f1,
)

LABELS = ("a", "b", "c")
# Confusion matrix (rows true, cols predicted): a -> [2, 1, 0], b -> [0, 1, 1], c -> [0, 0, 1].
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]


def test_known_values() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)

    assert m.n == 6
    assert m.labels == LABELS
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.confusion_matrix == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m.per_class["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m.per_class["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m.per_class["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true = ["neg", "pos", "pos", "neg", "pos", "neg", "neg", "pos", "pos", "pos"]
    y_pred = ["neg", "pos", "neg", "neg", "pos", "pos", "neg", "pos", "neg", "pos"]
    labels = ["neg", "pos"]
    m = classification_metrics(y_true, y_pred, labels)

    assert m.macro_f1 == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro"))
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.confusion_matrix == confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_declared_label_absent_from_data_counts_in_macro_f1() -> None:
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])

    assert m.per_class["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m.accuracy == 1.0
    assert m.macro_f1 == pytest.approx(2 / 3)
    assert m.confusion_matrix[2] == [0, 0, 0]


def test_never_predicted_class_has_zero_precision_not_nan() -> None:
    m = classification_metrics(["a", "b", "b"], ["a", "a", "a"], ["a", "b"])

    assert m.per_class["b"]["precision"] == 0.0
    assert m.per_class["b"]["f1"] == 0.0
    assert m.macro_f1 == pytest.approx(0.5 * (2 * (1 / 3) * 1 / (1 / 3 + 1)))


def test_labels_are_compared_as_strings() -> None:
    m = classification_metrics([0, 1, 1], ["0", "1", "0"], ["0", "1"])  # type: ignore[list-item]

    assert m.confusion_matrix == [[1, 0], [1, 1]]


def test_round_trips_through_dict() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)

    assert ModelMetrics.from_dict(m.to_dict()) == m


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (["a", "x"], ["a", "a"], "y_true contains label 'x'"),
        (["a", "b"], ["a", "zzz"], "y_pred contains label 'zzz'"),
        (["a", "b"], ["a"], "y_true has 2 rows but y_pred has 1"),
        ([], [], "empty"),
    ],
)
def test_bad_input_is_named(y_true: list[str], y_pred: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        classification_metrics(y_true, y_pred, ["a", "b"])


# ---------------------------------------------------------------------------------------------- macro-F1


@pytest.mark.parametrize(("seed", "k", "n"), [(0, 2, 50), (1, 3, 200), (2, 5, 400), (3, 7, 30)])
def test_macro_f1_matches_scikit_learn(seed: int, k: int, n: int) -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, size=n)
    pred = rng.integers(0, k, size=n)

    expected = f1_score(true, pred, labels=list(range(k)), average="macro", zero_division=0)
    assert macro_f1(true, pred, k) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_equals_metrics_module_exactly() -> None:
    rng = np.random.default_rng(4)
    labels = ["a", "b", "c", "d"]
    true = rng.integers(0, 3, size=300)  # class "d" is declared but never true
    pred = rng.integers(0, 4, size=300)

    m = classification_metrics([labels[i] for i in true], [labels[i] for i in pred], labels)
    assert macro_f1(true, pred, 4) == m.macro_f1


def test_macro_f1_declared_class_never_seen_counts_as_zero() -> None:
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 2) == 1.0
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 4) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("true", "pred", "k", "message"),
    [
        ([0, 1, 1], [0, 1], 2, "true_idx has 3 rows but pred_idx has 2"),
        ([], [], 2, "true_idx is empty"),
        ([0, 2], [0, 1], 2, r"true_idx\[1\] = 2 is outside the class indices 0..1"),
        ([0, 1], [0, -1], 2, r"pred_idx\[1\] = -1 is outside"),
        ([0.0, 1.0], [0, 1], 2, "true_idx must hold integer class indices"),
        (["a", "b"], [0, 1], 2, "true_idx must hold integer class indices"),
        ([[0, 1]], [[0, 1]], 2, "true_idx must be a 1-D array"),
        ([0, 0], [0, 0], 0, "k .* must be at least 1"),
        ([0, 0], [0, 0], 2.0, "k .* must be an integer"),
    ],
)
def test_macro_f1_bad_inputs(true: object, pred: object, k: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        macro_f1(true, pred, k)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- latency


def test_latency_summary() -> None:
    seconds = [0.010, 0.020, 0.030, 0.040, 0.500]

    summary = latency_summary(seconds)

    assert summary.n == 5
    assert summary.mean_ms == pytest.approx(120.0)
    assert summary.p95_ms == pytest.approx(np.percentile(seconds, 95) * 1000)
    assert summary.p95_ms == pytest.approx(408.0)
    assert LatencySummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        ([], "seconds is empty"),
        ([0.1, -0.2], r"seconds\[1\] = -0.2 is negative"),
        ([0.1, np.inf], r"seconds\[1\] = inf is not a finite number"),
    ],
)
def test_latency_summary_bad_inputs(seconds: list[float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        latency_summary(seconds)

"""classification_metrics on constructed predictions with hand-computed values."""

from __future__ import annotations

import pytest

from refinery.errors import DataError
from refinery.evaluation.metrics import ModelMetrics, classification_metrics

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

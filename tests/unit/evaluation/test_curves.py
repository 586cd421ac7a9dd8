"""refinery.evaluation.curves against scikit-learn, and on constructed cases with known answers."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from refinery.errors import DataError
from refinery.evaluation import curves
from refinery.evaluation.curves import CalibrationReport

# ---------------------------------------------------------------------------------------------- calibration


def _rows(prob: list[float], count: int, right: int, k_true: int = 0) -> tuple[list[list[float]], list[int]]:
    """``count`` rows with probabilities ``prob`` (argmax ``k_true``), the first ``right`` of them correct."""
    wrong_class = 1 if k_true == 0 else 0
    return [prob] * count, [k_true] * right + [wrong_class] * (count - right)


def _stack(*parts: tuple[list[list[float]], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    probs = np.array([row for p, _ in parts for row in p])
    true = np.array([t for _, ts in parts for t in ts])
    return probs, true


def test_ece_of_perfectly_calibrated_constructed_data_is_zero() -> None:
    probs, true = _stack(
        _rows([0.8, 0.2], 100, 80), _rows([0.4, 0.6], 50, 30, k_true=1), _rows([0.95, 0.05], 40, 38)
    )

    report = curves.calibration_report(probs, true, bins=10)

    assert report.ece == pytest.approx(0.0, abs=1e-12)
    assert curves.expected_calibration_error(probs, true, bins=10) == report.ece
    assert report.n == 190


def test_ece_of_sampled_calibrated_model_is_small() -> None:
    rng = np.random.default_rng(12)
    confidence = rng.uniform(0.5, 1.0, size=20_000)
    true = np.where(rng.random(20_000) < confidence, 0, 1)
    probs = np.column_stack([confidence, 1.0 - confidence])

    assert curves.expected_calibration_error(probs, true) < 0.02


def test_ece_of_overconfident_model_equals_hand_computed_value() -> None:
    # 50 rows at confidence 0.99 with 25 right, 30 rows at 0.7 with 21 right, 20 rows at 0.9 with 10 right:
    # ECE = 0.5 * |0.5 - 0.99| + 0.3 * |0.7 - 0.7| + 0.2 * |0.5 - 0.9| = 0.245 + 0 + 0.08.
    probs, true = _stack(
        _rows([0.99, 0.01], 50, 25), _rows([0.3, 0.7], 30, 21, k_true=1), _rows([0.9, 0.1], 20, 10)
    )

    report = curves.calibration_report(probs, true, bins=10)

    assert report.ece == pytest.approx(0.325)
    assert len(report.bins) == 10
    assert [(b.low, b.high) for b in report.bins[:2]] == [(0.0, 0.1), (0.1, 0.2)]
    assert report.bins[-1].high == 1.0
    by_count = {i: b for i, b in enumerate(report.bins) if b.count}
    assert sorted(by_count) == [6, 8, 9]  # 0.7 in (0.6, 0.7], 0.9 in (0.8, 0.9], 0.99 in (0.9, 1]
    assert by_count[9].count == 50
    assert by_count[9].mean_confidence == pytest.approx(0.99)
    assert by_count[9].accuracy == 0.5
    assert by_count[6].accuracy == pytest.approx(0.7)
    assert report.bins[0].count == 0
    assert report.bins[0].mean_confidence is None and report.bins[0].accuracy is None
    assert sum(b.count for b in report.bins) == 100


def test_ece_uses_the_arg_max_class_in_multiclass() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    true = np.array([1, 1, 2])
    # Confidences 0.7 (right), 0.6 (wrong), 0.6 (right): with one bin, |2/3 - 1.9/3|.
    assert curves.expected_calibration_error(probs, true, bins=1) == pytest.approx(abs(2 / 3 - 1.9 / 3))


def test_calibration_report_round_trips_through_json() -> None:
    probs, true = _stack(_rows([0.8, 0.2], 10, 6), _rows([0.4, 0.6], 5, 5, k_true=1))
    report = curves.calibration_report(probs, true, bins=5)

    assert CalibrationReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


@pytest.mark.parametrize(
    ("probs", "true", "message"),
    [
        ([[0.5, 0.4], [0.5, 0.5]], [0, 1], "probabilities row 0 sums to 0.9, not 1"),
        ([[1.2, -0.2], [0.5, 0.5]], [0, 1], r"probabilities\[0, 0\] = 1.2 is not a number in \[0, 1\]"),
        ([[np.nan, 0.5], [0.5, 0.5]], [0, 1], r"probabilities\[0, 0\] = nan"),
        ([[0.5, 0.5], [0.5, 0.5]], [0], "probabilities has 2 rows but true_idx has 1"),
        ([[0.5, 0.5]], [2], r"true_idx\[0\] = 2 is outside the class indices 0..1"),
        ([0.5, 0.5], [0], "probabilities must be a 2-D array"),
        (np.zeros((0, 2)), [], "probabilities is empty"),
    ],
)
def test_probability_bad_inputs(probs: object, true: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        curves.calibration_report(probs, true)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message):
        curves.log_loss(probs, true)  # type: ignore[arg-type]


def test_calibration_bins_must_be_positive() -> None:
    with pytest.raises(DataError, match="bins must be a positive integer"):
        curves.calibration_report([[0.5, 0.5]], [0], bins=0)


# ---------------------------------------------------------------------------------------------- log-loss


@pytest.mark.parametrize(("seed", "k"), [(13, 2), (14, 4)])
def test_log_loss_matches_scikit_learn(seed: int, k: int) -> None:
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=300)
    true = rng.integers(0, k, size=300)

    assert curves.log_loss(probs, true) == pytest.approx(
        log_loss(true, probs, labels=list(range(k))), rel=1e-9
    )


def test_log_loss_clips_a_confident_miss() -> None:
    loss = curves.log_loss([[1.0, 0.0], [0.5, 0.5]], [1, 0], eps=1e-6)

    assert loss == pytest.approx((-np.log(1e-6) - np.log(0.5)) / 2)
    with pytest.raises(DataError, match=r"eps must be in \[0, 0.5\)"):
        curves.log_loss([[1.0, 0.0]], [0], eps=0.7)


def test_log_loss_default_clip_is_the_documented_eps() -> None:
    # scikit-learn clips at float64's machine epsilon; the documented default is 1e-15.
    assert curves.log_loss([[1.0, 0.0]], [1]) == pytest.approx(-np.log(1e-15))


def test_log_loss_accepts_float32_softmax_rows_without_a_warning() -> None:
    # Rows off 1 by ~1e-7 pass the tolerance checked here; scikit-learn's tighter check must not warn.
    probs = np.array([[0.3, 0.7 + 1e-7], [0.9 - 1e-7, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = curves.log_loss(probs, [1, 0])
    assert loss == pytest.approx(-(np.log(0.7 + 1e-7) + np.log(0.9 - 1e-7)) / 2)


def test_log_loss_of_a_single_declared_class() -> None:
    # scikit-learn needs two labels; one declared class, always predicted with probability 1, costs ~0.
    assert curves.log_loss([[1.0], [1.0]], [0, 0]) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------- curves


def _binary_data(seed: int, n: int = 400, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.35
    # Rounding leaves many tied scores; positives score higher on average.
    scores = np.round(rng.normal(size=n) + positive * 0.8, decimals)
    return scores, positive


@pytest.mark.parametrize(("seed", "decimals"), [(15, 1), (16, 0), (17, 6), (18, 2)])
def test_binary_curves_equal_scikit_learn(seed: int, decimals: int) -> None:
    from sklearn import metrics as skm

    scores, positive = _binary_data(seed, decimals=decimals)

    for drop in (True, False):
        ours = curves.roc_curve(scores, positive, drop_intermediate=drop)
        theirs = skm.roc_curve(positive, scores, drop_intermediate=drop)
        for got, want in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)

    ours_pr = curves.precision_recall_curve(scores, positive)
    theirs_pr = skm.precision_recall_curve(positive, scores)
    for got, want in zip(ours_pr, theirs_pr, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)

    assert curves.roc_auc(scores, positive) == pytest.approx(skm.roc_auc_score(positive, scores), abs=1e-9)
    assert curves.average_precision(scores, positive) == pytest.approx(
        skm.average_precision_score(positive, scores), abs=1e-9
    )


def test_curves_on_a_hand_checked_example() -> None:
    scores = [0.1, 0.4, 0.35, 0.8]
    positive = [0, 0, 1, 1]

    fpr, tpr, thresholds = curves.roc_curve(scores, positive)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds.tolist() == [np.inf, 0.8, 0.4, 0.35, 0.1]
    assert curves.roc_auc(scores, positive) == 0.75
    assert curves.roc_auc([1, 1, 1, 1], positive) == 0.5  # all tied: chance
    assert curves.average_precision(scores, positive) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


@pytest.mark.parametrize(
    "function", [curves.roc_curve, curves.roc_auc, curves.precision_recall_curve, curves.average_precision]
)
def test_binary_curves_bad_inputs(function: Callable[..., object]) -> None:
    with pytest.raises(DataError, match="only positive rows; a binary curve needs both classes"):
        function([0.1, 0.2], [1, 1])
    with pytest.raises(DataError, match="only negative rows"):
        function([0.1, 0.2], [False, False])
    with pytest.raises(DataError, match="scores has 3 rows but positive_true has 2"):
        function([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(DataError, match=r"scores\[1\] = nan is not a finite number"):
        function([0.1, np.nan], [0, 1])
    with pytest.raises(DataError, match=r"positive_true\[0\] = 2"):
        function([0.1, 0.2], [2, 1])

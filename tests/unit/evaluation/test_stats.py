"""refinery.evaluation.stats against scikit-learn and scipy, and on constructed cases with known answers."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from refinery.errors import DataError
from refinery.evaluation import stats
from refinery.evaluation.metrics import classification_metrics
from refinery.evaluation.stats import (
    BootstrapResult,
    CalibrationReport,
    LatencySummary,
    McNemarResult,
    SliceScore,
)


def _predictions(rng: np.random.Generator, true: np.ndarray, accuracy: float, k: int) -> np.ndarray:
    """Predictions right on a random ``accuracy`` share of rows, a random wrong class elsewhere."""
    pred = true.copy()
    wrong = rng.random(true.shape[0]) >= accuracy
    pred[wrong] = (true[wrong] + rng.integers(1, k, size=int(wrong.sum()))) % k
    return pred


# ---------------------------------------------------------------------------------------------- macro-F1


@pytest.mark.parametrize(("seed", "k", "n"), [(0, 2, 50), (1, 3, 200), (2, 5, 400), (3, 7, 30)])
def test_macro_f1_matches_scikit_learn(seed: int, k: int, n: int) -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, size=n)
    pred = rng.integers(0, k, size=n)

    expected = f1_score(true, pred, labels=list(range(k)), average="macro", zero_division=0)
    assert stats.macro_f1(true, pred, k) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_equals_metrics_module_exactly() -> None:
    rng = np.random.default_rng(4)
    labels = ["a", "b", "c", "d"]
    true = rng.integers(0, 3, size=300)  # class "d" is declared but never true
    pred = rng.integers(0, 4, size=300)

    m = classification_metrics([labels[i] for i in true], [labels[i] for i in pred], labels)
    assert stats.macro_f1(true, pred, 4) == m.macro_f1


def test_macro_f1_declared_class_never_seen_counts_as_zero() -> None:
    assert stats.macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 2) == 1.0
    assert stats.macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 4) == pytest.approx(0.5)


def test_macro_f1_scores_batched_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    true = rng.integers(0, 3, size=(40, 25))
    pred = rng.integers(0, 3, size=(40, 25))

    batched = stats.macro_f1_scores(true, pred, 3)

    assert batched.shape == (40,)
    assert batched.tolist() == [stats.macro_f1(t, p, 3) for t, p in zip(true, pred, strict=True)]


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
        stats.macro_f1(true, pred, k)  # type: ignore[arg-type]


def test_macro_f1_scores_bad_shapes() -> None:
    with pytest.raises(DataError, match="must be a 2-D array"):
        stats.macro_f1_scores([0, 1], [0, 1], 2)
    with pytest.raises(DataError, match=r"true_idx has shape \(2, 3\) but pred_idx has shape \(3, 2\)"):
        stats.macro_f1_scores(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int), 2)


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_models_give_exactly_zero() -> None:
    rng = np.random.default_rng(6)
    true = rng.integers(0, 3, size=500)
    pred = _predictions(rng, true, 0.8, 3)

    result = stats.paired_bootstrap(true, pred, pred.copy(), 3, resamples=300)

    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.share_not_better == 1.0
    assert result.challenger_macro_f1 == result.champion_macro_f1 == stats.macro_f1(true, pred, 3)


def test_bootstrap_much_better_challenger_is_entirely_above_zero() -> None:
    rng = np.random.default_rng(7)
    true = rng.integers(0, 2, size=2000)
    challenger = _predictions(rng, true, 0.95, 2)
    champion = _predictions(rng, true, 0.70, 2)

    result = stats.paired_bootstrap(true, challenger, champion, 2)

    assert result.difference == pytest.approx(
        stats.macro_f1(true, challenger, 2) - stats.macro_f1(true, champion, 2)
    )
    assert 0.2 < result.difference < 0.3
    assert 0.0 < result.low < result.difference < result.high
    assert result.share_not_better == 0.0
    assert (result.n, result.resamples, result.confidence, result.seed) == (2000, 1000, 0.95, 0)


def test_bootstrap_half_point_better_challenger_interval_contains_zero() -> None:
    rng = np.random.default_rng(8)
    n = 1000
    true = rng.integers(0, 2, size=n)
    champion = _predictions(rng, true, 0.85, 2)
    challenger = champion.copy()
    # 105 discordant rows: the challenger fixes 55 of the champion's errors and breaks 50 of its hits.
    wrong = np.flatnonzero(champion != true)
    right = np.flatnonzero(champion == true)
    challenger[wrong[:55]] = true[wrong[:55]]
    challenger[right[:50]] = 1 - true[right[:50]]

    result = stats.paired_bootstrap(true, challenger, champion, 2)

    assert 0.0 < result.difference < 0.01
    assert result.low < 0.0 < result.high
    assert 0.1 < result.share_not_better < 0.9


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(9)
    true = rng.integers(0, 3, size=400)
    a = _predictions(rng, true, 0.8, 3)
    b = _predictions(rng, true, 0.75, 3)

    first = stats.paired_bootstrap(true, a, b, 3, resamples=200, seed=11)
    again = stats.paired_bootstrap(true, a, b, 3, resamples=200, seed=11)
    other = stats.paired_bootstrap(true, a, b, 3, resamples=200, seed=12)

    assert first == again
    assert (other.low, other.high) != (first.low, first.high)
    assert other.difference == first.difference


def test_chunked_bootstrap_equals_unchunked_reference() -> None:
    rng = np.random.default_rng(10)
    n, k, resamples, seed = 60, 3, 203, 5
    true = rng.integers(0, k, size=n)
    a = _predictions(rng, true, 0.7, k)
    b = _predictions(rng, true, 0.6, k)

    # Reference: every resample drawn at once and scored one at a time by the 1-D function.
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int64)
    diffs = np.array([stats.macro_f1(true[i], a[i], k) - stats.macro_f1(true[i], b[i], k) for i in idx])
    low, high = np.quantile(diffs, [0.25, 0.75])

    for chunk_size in (1, 7, 100, None):
        result = stats.paired_bootstrap(
            true, a, b, k, resamples=resamples, confidence=0.5, seed=seed, chunk_size=chunk_size
        )
        assert (result.low, result.high) == (low, high), chunk_size
        assert result.share_not_better == np.mean(diffs <= 0), chunk_size


def test_bootstrap_result_round_trips_through_json() -> None:
    result = stats.paired_bootstrap([0, 1, 1, 0, 1], [0, 1, 0, 0, 1], [1, 1, 0, 0, 1], 2, resamples=50)

    data = json.loads(json.dumps(result.to_dict()))

    assert BootstrapResult.from_dict(data) == result


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"champion_idx": [0, 1]}, "true_idx has 3 rows but champion_idx has 2"),
        ({"challenger_idx": [0, 1, 3]}, r"challenger_idx\[2\] = 3 is outside"),
        ({"resamples": 0}, "resamples must be a positive integer"),
        ({"confidence": 1.0}, "confidence must be strictly between 0 and 1"),
        ({"confidence": 0.0}, "confidence must be strictly between 0 and 1"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ],
)
def test_bootstrap_bad_inputs(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "true_idx": [0, 1, 1],
        "challenger_idx": [0, 1, 0],
        "champion_idx": [0, 0, 1],
        "k": 2,
    }
    args.update(kwargs)
    with pytest.raises(DataError, match=message):
        stats.paired_bootstrap(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- McNemar


def _paired(b: int, c: int, both_right: int = 30, both_wrong: int = 7) -> tuple[np.ndarray, np.ndarray]:
    challenger = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    champion = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    order = np.random.default_rng(b * 100 + c).permutation(len(challenger))
    return np.array(challenger)[order], np.array(champion)[order]


@pytest.mark.parametrize(("b", "c"), [(1, 0), (3, 9), (9, 3), (12, 12), (0, 24), (10, 14)])
def test_mcnemar_exact_matches_scipy_binomtest(b: int, c: int) -> None:
    from scipy.stats import binomtest

    result = stats.mcnemar(*_paired(b, c))

    assert (result.b, result.c, result.method) == (b, c, "exact")
    assert result.n == b + c + 37
    assert result.statistic == min(b, c)
    assert result.p_value == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize(("b", "c"), [(25, 0), (10, 15), (40, 22), (3, 60)])
def test_mcnemar_chi_square_with_continuity_correction_matches_scipy(b: int, c: int) -> None:
    from scipy.stats import chi2

    result = stats.mcnemar(*_paired(b, c))

    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    assert (result.b, result.c, result.method) == (b, c, "chi2")
    assert result.statistic == pytest.approx(statistic)
    assert result.p_value == pytest.approx(chi2.sf(statistic, df=1), rel=1e-9)


def test_mcnemar_edge_cases() -> None:
    none_discordant = stats.mcnemar([True, False, True], [True, False, True])
    assert (none_discordant.b, none_discordant.c, none_discordant.p_value) == (0, 0, 1.0)
    assert none_discordant.method == "exact"

    balanced = stats.mcnemar(*_paired(20, 20))
    assert (balanced.method, balanced.statistic, balanced.p_value) == ("chi2", 0.0, 1.0)

    # 0/1 integers are accepted as booleans.
    assert stats.mcnemar([1, 0, 1], [0, 0, 1]) == stats.mcnemar([True, False, True], [False, False, True])


def test_mcnemar_result_round_trips_through_json() -> None:
    result = stats.mcnemar(*_paired(30, 12))

    assert McNemarResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(DataError, match="method must be 'exact' or 'chi2'"):
        McNemarResult.from_dict({**result.to_dict(), "method": "wald"})


@pytest.mark.parametrize(
    ("challenger", "champion", "message"),
    [
        ([True, False], [True], "challenger_correct has 2 rows but champion_correct has 1"),
        ([], [], "challenger_correct is empty"),
        ([1, 2], [1, 0], r"challenger_correct\[1\] = 2"),
        (["yes", "no"], [True, False], "challenger_correct must hold booleans"),
    ],
)
def test_mcnemar_bad_inputs(challenger: object, champion: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        stats.mcnemar(challenger, champion)  # type: ignore[arg-type]


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

    report = stats.calibration_report(probs, true, bins=10)

    assert report.ece == pytest.approx(0.0, abs=1e-12)
    assert stats.expected_calibration_error(probs, true, bins=10) == report.ece
    assert report.n == 190


def test_ece_of_sampled_calibrated_model_is_small() -> None:
    rng = np.random.default_rng(12)
    confidence = rng.uniform(0.5, 1.0, size=20_000)
    true = np.where(rng.random(20_000) < confidence, 0, 1)
    probs = np.column_stack([confidence, 1.0 - confidence])

    assert stats.expected_calibration_error(probs, true) < 0.02


def test_ece_of_overconfident_model_equals_hand_computed_value() -> None:
    # 50 rows at confidence 0.99 with 25 right, 30 rows at 0.7 with 21 right, 20 rows at 0.9 with 10 right:
    # ECE = 0.5 * |0.5 - 0.99| + 0.3 * |0.7 - 0.7| + 0.2 * |0.5 - 0.9| = 0.245 + 0 + 0.08.
    probs, true = _stack(
        _rows([0.99, 0.01], 50, 25), _rows([0.3, 0.7], 30, 21, k_true=1), _rows([0.9, 0.1], 20, 10)
    )

    report = stats.calibration_report(probs, true, bins=10)

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
    assert stats.expected_calibration_error(probs, true, bins=1) == pytest.approx(abs(2 / 3 - 1.9 / 3))


def test_calibration_report_round_trips_through_json() -> None:
    probs, true = _stack(_rows([0.8, 0.2], 10, 6), _rows([0.4, 0.6], 5, 5, k_true=1))
    report = stats.calibration_report(probs, true, bins=5)

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
        stats.calibration_report(probs, true)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message):
        stats.log_loss(probs, true)  # type: ignore[arg-type]


def test_calibration_bins_must_be_positive() -> None:
    with pytest.raises(DataError, match="bins must be a positive integer"):
        stats.calibration_report([[0.5, 0.5]], [0], bins=0)


# ---------------------------------------------------------------------------------------------- log-loss


@pytest.mark.parametrize(("seed", "k"), [(13, 2), (14, 4)])
def test_log_loss_matches_scikit_learn(seed: int, k: int) -> None:
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=300)
    true = rng.integers(0, k, size=300)

    assert stats.log_loss(probs, true) == pytest.approx(
        log_loss(true, probs, labels=list(range(k))), rel=1e-9
    )


def test_log_loss_clips_a_confident_miss() -> None:
    loss = stats.log_loss([[1.0, 0.0], [0.5, 0.5]], [1, 0], eps=1e-6)

    assert loss == pytest.approx((-np.log(1e-6) - np.log(0.5)) / 2)
    with pytest.raises(DataError, match=r"eps must be in \[0, 0.5\)"):
        stats.log_loss([[1.0, 0.0]], [0], eps=0.7)


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
        ours = stats.roc_curve(scores, positive, drop_intermediate=drop)
        theirs = skm.roc_curve(positive, scores, drop_intermediate=drop)
        for got, want in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)

    ours_pr = stats.precision_recall_curve(scores, positive)
    theirs_pr = skm.precision_recall_curve(positive, scores)
    for got, want in zip(ours_pr, theirs_pr, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)

    assert stats.roc_auc(scores, positive) == pytest.approx(skm.roc_auc_score(positive, scores), abs=1e-9)
    assert stats.average_precision(scores, positive) == pytest.approx(
        skm.average_precision_score(positive, scores), abs=1e-9
    )


def test_curves_on_a_hand_checked_example() -> None:
    scores = [0.1, 0.4, 0.35, 0.8]
    positive = [0, 0, 1, 1]

    fpr, tpr, thresholds = stats.roc_curve(scores, positive)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds.tolist() == [np.inf, 0.8, 0.4, 0.35, 0.1]
    assert stats.roc_auc(scores, positive) == 0.75
    assert stats.roc_auc([1, 1, 1, 1], positive) == 0.5  # all tied: chance
    assert stats.average_precision(scores, positive) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


@pytest.mark.parametrize(
    "function", [stats.roc_curve, stats.roc_auc, stats.precision_recall_curve, stats.average_precision]
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


# ---------------------------------------------------------------------------------------------- latency


def test_latency_summary() -> None:
    seconds = [0.010, 0.020, 0.030, 0.040, 0.500]

    summary = stats.latency_summary(seconds)

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
        stats.latency_summary(seconds)


# ---------------------------------------------------------------------------------------------- slices


def test_length_bucket_default_edges() -> None:
    texts = ["", "x" * 50, "x" * 51, "x" * 200, "x" * 201, "é" * 60]

    assert stats.length_bucket(texts) == [
        "<=50 chars",
        "<=50 chars",
        "51-200 chars",
        "51-200 chars",
        ">200 chars",
        "51-200 chars",  # characters, not bytes
    ]
    assert stats.length_bucket_names() == ("<=50 chars", "51-200 chars", ">200 chars")
    assert stats.length_bucket([]) == []


def test_length_bucket_custom_edges() -> None:
    assert stats.length_bucket(["ab", "abc", "abcd", "abcdef"], edges=(2, 3, 5)) == [
        "<=2 chars",
        "3 chars",
        "4-5 chars",
        ">5 chars",
    ]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ((), "must not be empty"),
        ((200, 50), "strictly increasing"),
        ((10, 10), "strictly increasing"),
        ((-1,), "non-negative integers"),
        ((2.5,), "non-negative integers"),
    ],
)
def test_length_bucket_bad_edges(edges: tuple[object, ...], message: str) -> None:
    with pytest.raises(DataError, match=message):
        stats.length_bucket(["a"], edges=edges)  # type: ignore[arg-type]


def test_length_bucket_rejects_non_strings() -> None:
    with pytest.raises(DataError, match=r"texts\[1\] is NoneType, not a string"):
        stats.length_bucket(["a", None])  # type: ignore[list-item]


def test_slice_metrics_match_scikit_learn_per_group() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(19)
    k = 3
    true = rng.integers(0, k, size=600)
    pred = _predictions(rng, true, 0.75, k)
    groups = rng.choice(np.array(["web", "email", "chat"], dtype=object), size=600).tolist()
    groups[:5] = [None] * 5

    result = stats.slice_metrics(true, pred, k, groups)

    assert list(result) == ["None", "chat", "email", "web"]
    for name, score in result.items():
        mask = np.array([str(g) == name for g in groups])
        assert score.n == mask.sum()
        assert score.accuracy == pytest.approx(accuracy_score(true[mask], pred[mask]))
        assert score.macro_f1 == pytest.approx(
            f1_score(true[mask], pred[mask], labels=list(range(k)), average="macro", zero_division=0)
        )
    assert SliceScore.from_dict(json.loads(json.dumps(result["web"].to_dict()))) == result["web"]


def test_slice_metrics_with_length_buckets() -> None:
    texts = ["short", "x" * 100, "y" * 120, "z" * 300]
    result = stats.slice_metrics([0, 1, 1, 0], [0, 1, 0, 0], 2, stats.length_bucket(texts))

    assert result["<=50 chars"] == SliceScore(n=1, accuracy=1.0, macro_f1=0.5)
    assert result["51-200 chars"].n == 2
    assert result["51-200 chars"].accuracy == 0.5
    assert result[">200 chars"].n == 1


def test_slice_metrics_bad_inputs() -> None:
    with pytest.raises(DataError, match="true_idx has 3 rows but groups has 2"):
        stats.slice_metrics([0, 1, 1], [0, 1, 1], 2, ["a", "b"])
    with pytest.raises(DataError, match=r"pred_idx\[0\] = 5 is outside"):
        stats.slice_metrics([0], [5], 2, ["a"])

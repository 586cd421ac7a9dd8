"""refinery.evaluation.significance: the vectorised macro-F1 against scikit-learn's, the paired bootstrap
and McNemar's test against scipy, and constructed cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refinery.errors import DataError
from refinery.evaluation import significance
from refinery.evaluation.metrics import macro_f1
from refinery.evaluation.significance import BootstrapResult, McNemarResult


def _predictions(rng: np.random.Generator, true: np.ndarray, accuracy: float, k: int) -> np.ndarray:
    """Predictions right on a random ``accuracy`` share of rows, a random wrong class elsewhere."""
    pred = true.copy()
    wrong = rng.random(true.shape[0]) >= accuracy
    pred[wrong] = (true[wrong] + rng.integers(1, k, size=int(wrong.sum()))) % k
    return pred


# ---------------------------------------------------------------------------------------------- vectorised macro-F1


@pytest.mark.parametrize(("seed", "k", "n"), [(0, 2, 5), (1, 3, 12), (2, 5, 12), (3, 7, 30), (4, 10, 8)])
def test_vectorised_macro_f1_equals_scikit_learn(seed: int, k: int, n: int) -> None:
    """The bootstrap's own macro-F1 is the definition's (scikit-learn's), resample by resample.

    Small ``n`` against ``k`` leaves classes absent from many resamples (recall 0, F1 0) and classes never
    predicted (precision 0); both must count as the definition counts them.
    """
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, size=n)
    pred = _predictions(rng, true, 0.6, k)
    resamples = rng.integers(0, n, size=(200, n))

    batched = significance.macro_f1_scores(true[resamples], pred[resamples], k)

    expected = [
        f1_score(true[rows], pred[rows], labels=list(range(k)), average="macro", zero_division=0)
        for rows in resamples
    ]
    assert any(len(set(true[rows].tolist())) < k for rows in resamples)  # absent classes were exercised
    assert batched.shape == (200,)
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)
    assert batched[0] == pytest.approx(macro_f1(true[resamples[0]], pred[resamples[0]], k), abs=1e-12)


def test_macro_f1_scores_bad_shapes() -> None:
    with pytest.raises(DataError, match="must be a 2-D array"):
        significance.macro_f1_scores([0, 1], [0, 1], 2)
    with pytest.raises(DataError, match=r"true_idx has shape \(2, 3\) but pred_idx has shape \(3, 2\)"):
        significance.macro_f1_scores(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int), 2)


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_models_give_exactly_zero() -> None:
    rng = np.random.default_rng(6)
    true = rng.integers(0, 3, size=500)
    pred = _predictions(rng, true, 0.8, 3)

    result = significance.paired_bootstrap(true, pred, pred.copy(), 3, resamples=300)

    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.share_not_better == 1.0
    assert result.challenger_macro_f1 == result.champion_macro_f1 == macro_f1(true, pred, 3)


def test_bootstrap_much_better_challenger_is_entirely_above_zero() -> None:
    rng = np.random.default_rng(7)
    true = rng.integers(0, 2, size=2000)
    challenger = _predictions(rng, true, 0.95, 2)
    champion = _predictions(rng, true, 0.70, 2)

    result = significance.paired_bootstrap(true, challenger, champion, 2)

    assert result.difference == pytest.approx(macro_f1(true, challenger, 2) - macro_f1(true, champion, 2))
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

    result = significance.paired_bootstrap(true, challenger, champion, 2)

    assert 0.0 < result.difference < 0.01
    assert result.low < 0.0 < result.high
    assert 0.1 < result.share_not_better < 0.9


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(9)
    true = rng.integers(0, 3, size=400)
    a = _predictions(rng, true, 0.8, 3)
    b = _predictions(rng, true, 0.75, 3)

    first = significance.paired_bootstrap(true, a, b, 3, resamples=200, seed=11)
    again = significance.paired_bootstrap(true, a, b, 3, resamples=200, seed=11)
    other = significance.paired_bootstrap(true, a, b, 3, resamples=200, seed=12)

    assert first == again
    assert (other.low, other.high) != (first.low, first.high)
    assert other.difference == first.difference


def test_chunked_bootstrap_equals_unchunked_reference() -> None:
    rng = np.random.default_rng(10)
    n, k, resamples, seed = 60, 3, 203, 5
    true = rng.integers(0, k, size=n)
    a = _predictions(rng, true, 0.7, k)
    b = _predictions(rng, true, 0.6, k)

    # Reference: every resample drawn at once and scored one at a time.
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int64)
    diffs = np.array(
        [
            significance.macro_f1_scores(true[i][None], a[i][None], k)[0]
            - significance.macro_f1_scores(true[i][None], b[i][None], k)[0]
            for i in idx
        ]
    )
    low, high = np.quantile(diffs, [0.25, 0.75])

    for chunk_size in (1, 7, 100, None):
        result = significance.paired_bootstrap(
            true, a, b, k, resamples=resamples, confidence=0.5, seed=seed, chunk_size=chunk_size
        )
        assert (result.low, result.high) == (low, high), chunk_size
        assert result.share_not_better == np.mean(diffs <= 0), chunk_size


def test_bootstrap_result_round_trips_through_json() -> None:
    result = significance.paired_bootstrap([0, 1, 1, 0, 1], [0, 1, 0, 0, 1], [1, 1, 0, 0, 1], 2, resamples=50)

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
        significance.paired_bootstrap(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- McNemar


def _paired(b: int, c: int, both_right: int = 30, both_wrong: int = 7) -> tuple[np.ndarray, np.ndarray]:
    challenger = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    champion = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    order = np.random.default_rng(b * 100 + c).permutation(len(challenger))
    return np.array(challenger)[order], np.array(champion)[order]


@pytest.mark.parametrize(("b", "c"), [(1, 0), (3, 9), (9, 3), (12, 12), (0, 24), (10, 14)])
def test_mcnemar_exact_matches_scipy_binomtest(b: int, c: int) -> None:
    from scipy.stats import binomtest

    result = significance.mcnemar(*_paired(b, c))

    assert (result.b, result.c, result.method) == (b, c, "exact")
    assert result.n == b + c + 37
    assert result.statistic == min(b, c)
    assert result.p_value == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize(("b", "c"), [(25, 0), (10, 15), (40, 22), (3, 60)])
def test_mcnemar_chi_square_with_continuity_correction_matches_scipy(b: int, c: int) -> None:
    from scipy.stats import chi2

    result = significance.mcnemar(*_paired(b, c))

    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    assert (result.b, result.c, result.method) == (b, c, "chi2")
    assert result.statistic == pytest.approx(statistic)
    assert result.p_value == pytest.approx(chi2.sf(statistic, df=1), rel=1e-9)


def test_mcnemar_edge_cases() -> None:
    none_discordant = significance.mcnemar([True, False, True], [True, False, True])
    assert (none_discordant.b, none_discordant.c, none_discordant.p_value) == (0, 0, 1.0)
    assert none_discordant.method == "exact"

    balanced = significance.mcnemar(*_paired(20, 20))
    assert (balanced.method, balanced.statistic, balanced.p_value) == ("chi2", 0.0, 1.0)

    # 0/1 integers are accepted as booleans.
    assert significance.mcnemar([1, 0, 1], [0, 0, 1]) == significance.mcnemar(
        [True, False, True], [False, False, True]
    )


def test_mcnemar_result_round_trips_through_json() -> None:
    result = significance.mcnemar(*_paired(30, 12))

    assert McNemarResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(ValueError, match="'exact' or 'chi2'"):
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
        significance.mcnemar(challenger, champion)  # type: ignore[arg-type]

"""Is the challenger really better than the champion? The paired bootstrap and McNemar's test.

Both compare two models' predictions on the same rows, as integer class indices ``0..k-1``.

The bootstrap scores thousands of resamples, so it keeps its own vectorised macro-F1
(:func:`macro_f1_scores`): one ``bincount`` builds the confusion matrices of a whole chunk of resamples.
scikit-learn's ``f1_score`` called per resample is the baseline ``bench/gate.py`` times it against; a
test holds the two equal (:func:`refinery.evaluation.metrics.macro_f1` is the definition). The observed
macro-F1 of each model on all rows is that definition, so it equals the evaluation's headline figure.

scipy is imported only inside :func:`mcnemar`, the one function that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from refinery.errors import DataError
from refinery.evaluation.checks import FloatArray, IntArray, as_bool, as_indices, check_k, same_length
from refinery.evaluation.metrics import macro_f1
from refinery.results import Record

#: Row draws held per bootstrap chunk. Two int64 buffers of this many elements (~34 MB in all) bound the
#: bootstrap's working memory whatever the number of rows and resamples.
_CHUNK_ELEMENTS = 1 << 21

#: Below this many discordant pairs McNemar uses the exact binomial test.
MCNEMAR_EXACT_BELOW = 25


# --------------------------------------------------------------------------------------------------------
# Vectorised macro-F1
# --------------------------------------------------------------------------------------------------------


def _stacked_macro_f1(codes: IntArray, k: int) -> FloatArray:
    """Macro-F1 of each row of ``codes`` (shape ``(R, n)``, each entry ``true * k + pred``).

    One bincount over (row, true, pred) gives the ``R`` confusion matrices; ``codes`` is overwritten
    (the per-row offsets are added in place) to save a buffer. A class never predicted has precision 0,
    one absent has recall 0, as in :func:`refinery.evaluation.metrics.macro_f1`.
    """
    r = codes.shape[0]
    codes += (np.arange(r, dtype=np.int64) * (k * k))[:, None]
    counts = np.bincount(codes.ravel(), minlength=r * k * k).reshape(r, k, k)
    tp = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)
    support = counts.sum(axis=2)
    predicted = counts.sum(axis=1)
    zeros = np.zeros_like(tp)
    precision = np.divide(tp, predicted, out=zeros.copy(), where=predicted > 0)
    recall = np.divide(tp, support, out=zeros.copy(), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=zeros, where=denom > 0)
    result: FloatArray = f1.mean(axis=1)
    return result


def macro_f1_scores(true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, k: int) -> FloatArray:
    """Macro-F1 of each row of a batch, e.g. ``R`` bootstrap resamples, with a single bincount.

    Args:
        true_idx: True class indices, shape ``(R, n)``.
        pred_idx: Predicted class indices, shape ``(R, n)``.
        k: Number of declared classes (as in :func:`refinery.evaluation.metrics.macro_f1`).

    Returns:
        Array of ``R`` macro-F1 values; entry ``r`` equals ``macro_f1(true_idx[r], pred_idx[r], k)`` up
        to floating-point rounding.

    Raises:
        DataError: The inputs are not 2-D, are empty, differ in shape, or hold an index outside ``0..k-1``.
    """
    k = check_k(k)
    true = as_indices(true_idx, k, "true_idx", ndim=2)
    pred = as_indices(pred_idx, k, "pred_idx", ndim=2)
    if true.shape != pred.shape:
        raise DataError(f"true_idx has shape {true.shape} but pred_idx has shape {pred.shape}")
    return _stacked_macro_f1(true * k + pred, k)


# --------------------------------------------------------------------------------------------------------
# Paired bootstrap
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult(Record):
    """Paired bootstrap of the macro-F1 difference, challenger minus champion.

    Attributes:
        difference: Observed challenger macro-F1 minus champion macro-F1 on all rows.
        low: Lower end of the percentile interval of the resampled differences.
        high: Upper end of the percentile interval.
        challenger_macro_f1: Observed challenger macro-F1.
        champion_macro_f1: Observed champion macro-F1.
        share_not_better: Share of resamples where the difference is <= 0 (a one-sided bootstrap p-value
            for "the challenger is better").
        n: Number of rows.
        resamples: Number of bootstrap resamples.
        confidence: Interval coverage, e.g. 0.95.
        seed: Seed of the resampling generator.
    """

    difference: float
    low: float
    high: float
    challenger_macro_f1: float
    champion_macro_f1: float
    share_not_better: float
    n: int
    resamples: int
    confidence: float
    seed: int


def _positive_int(value: object, what: str, *, zero: bool = False) -> None:
    least = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        kind = "a non-negative integer" if zero else "a positive integer"
        raise DataError(f"{what} must be {kind}, got {value!r}")


def _check_settings(resamples: int, confidence: float, seed: int, chunk_size: int | None) -> None:
    _positive_int(resamples, "resamples")
    if not isinstance(confidence, int | float) or not 0.0 < float(confidence) < 1.0:
        raise DataError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    _positive_int(seed, "seed", zero=True)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise DataError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _resampled_differences(
    chal_codes: IntArray, champ_codes: IntArray, k: int, resamples: int, seed: int, chunk_size: int
) -> FloatArray:
    """Challenger-minus-champion macro-F1 on each of ``resamples`` paired resamples, chunk by chunk."""
    n = chal_codes.shape[0]
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples, dtype=np.float64)
    size = min(chunk_size, resamples)
    gathered = np.empty((size, n), dtype=np.int64)
    for start in range(0, resamples, size):
        rows = min(size, resamples - start)
        idx = rng.integers(0, n, size=(rows, n), dtype=np.int64)
        buf = gathered[:rows]
        np.take(chal_codes, idx, out=buf, mode="clip")  # indices are in range; "clip" skips a copy
        f1_chal = _stacked_macro_f1(buf, k)
        np.take(champ_codes, idx, out=buf, mode="clip")
        f1_champ = _stacked_macro_f1(buf, k)
        diffs[start : start + rows] = f1_chal - f1_champ
    return diffs


def paired_bootstrap(
    true_idx: npt.ArrayLike,
    challenger_idx: npt.ArrayLike,
    champion_idx: npt.ArrayLike,
    k: int,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_size: int | None = None,
) -> BootstrapResult:
    """Percentile bootstrap interval of the challenger-minus-champion macro-F1 difference.

    Each resample draws ``n`` rows with replacement and scores both models on the same rows (paired), so
    the interval reflects only the rows where the two models disagree. Resamples are processed in
    chunks: the working memory is two int64 buffers of about two million entries (~34 MB) whatever
    ``n`` and ``resamples`` are (a single resample larger than that is one chunk). The draws come from
    ``numpy.random.default_rng(seed)`` as one ``(resamples, n)`` stream, so the result does not depend on
    ``chunk_size``.

    Args:
        true_idx: True class indices, shape ``(n,)``.
        challenger_idx: Challenger predictions, shape ``(n,)``.
        champion_idx: Champion predictions, shape ``(n,)``.
        k: Number of declared classes.
        resamples: Number of bootstrap resamples (at least 1).
        confidence: Interval coverage, strictly between 0 and 1.
        seed: Non-negative seed; the same inputs and seed give the same result.
        chunk_size: Resamples per chunk; ``None`` sizes chunks to the memory bound above.

    Returns:
        BootstrapResult with the observed difference and the interval.

    Raises:
        DataError: The inputs are empty, differ in length, hold an index outside ``0..k-1``, or a
            setting is out of range.
    """
    k = check_k(k)
    true = as_indices(true_idx, k, "true_idx")
    chal = as_indices(challenger_idx, k, "challenger_idx")
    champ = as_indices(champion_idx, k, "champion_idx")
    same_length(
        ("true_idx", true.shape[0]), ("challenger_idx", chal.shape[0]), ("champion_idx", champ.shape[0])
    )
    _check_settings(resamples, confidence, seed, chunk_size)
    n = int(true.shape[0])
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // n)

    observed_chal, observed_champ = macro_f1(true, chal, k), macro_f1(true, champ, k)
    diffs = _resampled_differences(true * k + chal, true * k + champ, k, resamples, seed, chunk_size)
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(diffs, [alpha / 2, 1.0 - alpha / 2])
    return BootstrapResult(
        difference=observed_chal - observed_champ,
        low=float(low),
        high=float(high),
        challenger_macro_f1=observed_chal,
        champion_macro_f1=observed_champ,
        share_not_better=float(np.mean(diffs <= 0.0)),
        n=n,
        resamples=resamples,
        confidence=float(confidence),
        seed=seed,
    )


# --------------------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult(Record):
    """McNemar's test on paired correctness of two models.

    Attributes:
        b: Rows the challenger got right and the champion wrong.
        c: Rows the champion got right and the challenger wrong.
        statistic: ``min(b, c)`` for the exact test; the continuity-corrected chi-square for ``"chi2"``.
        p_value: Two-sided p-value of "both models err equally often on the rows where they disagree".
        method: ``"exact"`` (binomial, used when ``b + c < 25``) or ``"chi2"`` (one degree of freedom,
            continuity-corrected).
        n: Number of rows.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: Literal["exact", "chi2"]
    n: int


def mcnemar(challenger_correct: npt.ArrayLike, champion_correct: npt.ArrayLike) -> McNemarResult:
    """McNemar's test of whether two models' error rates differ on the same rows.

    Only discordant rows count: ``b`` (challenger right, champion wrong) and ``c`` (the reverse). When
    ``b + c < 25`` the exact two-sided binomial test of ``b ~ Binomial(b + c, 1/2)`` is used, with
    ``p = min(1, 2 * P(X <= min(b, c)))``; otherwise the chi-square approximation with Edwards'
    continuity correction, ``max(|b - c| - 1, 0)**2 / (b + c)`` on one degree of freedom (the correction
    is floored at 0 so ``b == c`` gives p = 1). With no discordant rows the p-value is 1.

    Args:
        challenger_correct: Per row, whether the challenger's prediction is right (booleans or 0/1).
        champion_correct: Per row, whether the champion's prediction is right, aligned with the first.

    Returns:
        McNemarResult.

    Raises:
        DataError: The inputs are empty, differ in length, or hold something other than booleans or 0/1.
    """
    from scipy import stats as scipy_stats

    chal = as_bool(challenger_correct, "challenger_correct")
    champ = as_bool(champion_correct, "champion_correct")
    same_length(("challenger_correct", chal.shape[0]), ("champion_correct", champ.shape[0]))
    b = int(np.count_nonzero(chal & ~champ))
    c = int(np.count_nonzero(~chal & champ))
    n = int(chal.shape[0])
    if b + c < MCNEMAR_EXACT_BELOW:
        low = min(b, c)
        p = 1.0 if b + c == 0 else min(1.0, 2.0 * float(scipy_stats.binom.cdf(low, b + c, 0.5)))
        return McNemarResult(b=b, c=c, statistic=float(low), p_value=p, method="exact", n=n)
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    p = float(scipy_stats.chi2.sf(statistic, df=1))
    return McNemarResult(b=b, c=c, statistic=float(statistic), p_value=p, method="chi2", n=n)

"""Statistics for comparing a challenger with the champion: bootstrap, McNemar, calibration, curves, slices.

Everything here works on integer class indices ``0..k-1`` (the caller maps label strings to indices in
the declared label order) and on plain numpy arrays, so the numbers are defined in one place and match
:mod:`refinery.evaluation.metrics`: macro-F1 averages over every declared class, a class never predicted
has precision 0 and a class absent from the rows has recall 0.

Every function checks its inputs and raises :class:`~refinery.errors.DataError` with a message naming the
argument at fault (lengths that differ, empty input, an index outside ``0..k-1``, probability rows that
do not sum to 1, a binary curve with one class only, ...).

scipy is imported only inside :func:`mcnemar`, the one function that needs it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from refinery.errors import DataError
from refinery.results import to_jsonable

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Row draws held per bootstrap chunk. Two int64 buffers of this many elements (~34 MB in all) bound the
#: bootstrap's working memory whatever the number of rows and resamples.
_CHUNK_ELEMENTS = 1 << 21

#: Below this many discordant pairs McNemar uses the exact binomial test.
MCNEMAR_EXACT_BELOW = 25

#: How far a probability row may sum from 1 (float32 softmax output is off by ~1e-7 per row).
PROBABILITY_SUM_TOLERANCE = 1e-5

#: Default text-length bucket edges in characters: "<=50 chars", "51-200 chars", ">200 chars".
DEFAULT_LENGTH_EDGES: tuple[int, ...] = (50, 200)


# --------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise DataError(f"k (the number of classes) must be an integer, got {k!r}")
    if k < 1:
        raise DataError(f"k (the number of classes) must be at least 1, got {k}")
    return int(k)


def _as_indices(values: npt.ArrayLike, k: int, what: str, *, ndim: int = 1) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise DataError(f"{what} must be a {ndim}-D array of class indices, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what} must hold integer class indices 0..{k - 1}, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= k)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        where = pos[0] if ndim == 1 else pos
        raise DataError(f"{what}[{where}] = {arr[pos]} is outside the class indices 0..{k - 1}")
    return arr.astype(np.int64, copy=False)


def _same_length(*named: tuple[str, int]) -> None:
    first_name, first_len = named[0]
    for name, length in named[1:]:
        if length != first_len:
            raise DataError(f"{first_name} has {first_len} rows but {name} has {length}")


def _as_bool(values: npt.ArrayLike, what: str) -> BoolArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of booleans, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{what} must hold booleans (or 0/1), got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} must hold booleans (or 0/1), but {what}[{pos}] = {arr[pos]}")
    as_bool: BoolArray = arr == 1
    return as_bool


def _as_finite(values: npt.ArrayLike, what: str) -> FloatArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise DataError(f"{what} must hold numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what}[{pos}] = {out[pos]} is not a finite number")
    return out


def _as_probabilities(probabilities: npt.ArrayLike, true_idx: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    arr = np.asarray(probabilities)
    if arr.ndim != 2:
        raise DataError(f"probabilities must be a 2-D array (rows, classes), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError("probabilities is empty")
    if arr.shape[1] == 0:
        raise DataError("probabilities has no class columns")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise DataError(f"probabilities must hold numbers, got dtype {arr.dtype}")
    probs = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"probabilities[{row}, {col}] = {probs[row, col]} is not a number in [0, 1]")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(
            f"probabilities row {row} sums to {sums[row]:.6g}, not 1 (tolerance {PROBABILITY_SUM_TOLERANCE:g});"
            " pass softmax outputs, not logits"
        )
    k = probs.shape[1]
    true = _as_indices(true_idx, k, "true_idx")
    _same_length(("probabilities", probs.shape[0]), ("true_idx", true.shape[0]))
    return probs, true


# --------------------------------------------------------------------------------------------------------
# Macro-F1
# --------------------------------------------------------------------------------------------------------


def _macro_f1_from_confusion(counts: IntArray) -> FloatArray:
    """Macro-F1 of each confusion matrix in a ``(R, k, k)`` stack (rows true, columns predicted)."""
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


def _confusion_stack(codes: IntArray, k: int) -> IntArray:
    """One bincount over (row of ``codes``, true, pred): ``codes`` holds ``true * k + pred``, shape (R, n).

    ``codes`` is overwritten (the per-row offsets are added in place) to save a buffer.
    """
    r = codes.shape[0]
    codes += (np.arange(r, dtype=np.int64) * (k * k))[:, None]
    counts: IntArray = np.bincount(codes.ravel(), minlength=r * k * k).reshape(r, k, k)
    return counts


def macro_f1(true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, k: int) -> float:
    """Macro-F1 of one set of predictions, averaged over all ``k`` declared classes.

    Args:
        true_idx: True class indices, shape ``(n,)``.
        pred_idx: Predicted class indices, shape ``(n,)``.
        k: Number of declared classes; a class never predicted has precision 0, one absent has recall 0.

    Returns:
        The macro-F1, identical to :func:`refinery.evaluation.metrics.classification_metrics`'s.

    Raises:
        DataError: The inputs are empty, differ in length, or hold an index outside ``0..k-1``.
    """
    k = _check_k(k)
    true = _as_indices(true_idx, k, "true_idx")
    pred = _as_indices(pred_idx, k, "pred_idx")
    _same_length(("true_idx", true.shape[0]), ("pred_idx", pred.shape[0]))
    codes = (true * k + pred)[None, :]
    return float(_macro_f1_from_confusion(_confusion_stack(codes, k))[0])


def macro_f1_scores(true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, k: int) -> FloatArray:
    """Macro-F1 of each row of a batch, e.g. ``R`` bootstrap resamples, with a single bincount.

    Args:
        true_idx: True class indices, shape ``(R, n)``.
        pred_idx: Predicted class indices, shape ``(R, n)``.
        k: Number of declared classes (as in :func:`macro_f1`).

    Returns:
        Array of ``R`` macro-F1 values; entry ``r`` equals ``macro_f1(true_idx[r], pred_idx[r], k)``.

    Raises:
        DataError: The inputs are not 2-D, are empty, differ in shape, or hold an index outside ``0..k-1``.
    """
    k = _check_k(k)
    true = _as_indices(true_idx, k, "true_idx", ndim=2)
    pred = _as_indices(pred_idx, k, "pred_idx", ndim=2)
    if true.shape != pred.shape:
        raise DataError(f"true_idx has shape {true.shape} but pred_idx has shape {pred.shape}")
    return _macro_f1_from_confusion(_confusion_stack(true * k + pred, k))


# --------------------------------------------------------------------------------------------------------
# Paired bootstrap
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BootstrapResult:
        """Rebuild a result from :meth:`to_dict` output."""
        return cls(
            difference=float(data["difference"]),
            low=float(data["low"]),
            high=float(data["high"]),
            challenger_macro_f1=float(data["challenger_macro_f1"]),
            champion_macro_f1=float(data["champion_macro_f1"]),
            share_not_better=float(data["share_not_better"]),
            n=int(data["n"]),
            resamples=int(data["resamples"]),
            confidence=float(data["confidence"]),
            seed=int(data["seed"]),
        )


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
    k = _check_k(k)
    true = _as_indices(true_idx, k, "true_idx")
    chal = _as_indices(challenger_idx, k, "challenger_idx")
    champ = _as_indices(champion_idx, k, "champion_idx")
    _same_length(
        ("true_idx", true.shape[0]), ("challenger_idx", chal.shape[0]), ("champion_idx", champ.shape[0])
    )
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise DataError(f"resamples must be a positive integer, got {resamples!r}")
    if not isinstance(confidence, int | float) or not 0.0 < float(confidence) < 1.0:
        raise DataError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(true.shape[0])
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // n)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")

    chal_codes = true * k + chal
    champ_codes = true * k + champ
    observed = _macro_f1_from_confusion(_confusion_stack(np.stack([chal_codes, champ_codes]), k))

    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples, dtype=np.float64)
    size = min(chunk_size, resamples)
    gathered = np.empty((size, n), dtype=np.int64)
    for start in range(0, resamples, size):
        rows = min(size, resamples - start)
        idx = rng.integers(0, n, size=(rows, n), dtype=np.int64)
        buf = gathered[:rows]
        np.take(chal_codes, idx, out=buf, mode="clip")  # indices are in range; "clip" skips a copy
        f1_chal = _macro_f1_from_confusion(_confusion_stack(buf, k))
        np.take(champ_codes, idx, out=buf, mode="clip")
        f1_champ = _macro_f1_from_confusion(_confusion_stack(buf, k))
        diffs[start : start + rows] = f1_chal - f1_champ

    alpha = 1.0 - float(confidence)
    low, high = np.quantile(diffs, [alpha / 2, 1.0 - alpha / 2])
    return BootstrapResult(
        difference=float(observed[0] - observed[1]),
        low=float(low),
        high=float(high),
        challenger_macro_f1=float(observed[0]),
        champion_macro_f1=float(observed[1]),
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
class McNemarResult:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> McNemarResult:
        """Rebuild a result from :meth:`to_dict` output."""
        method = str(data["method"])
        if method not in ("exact", "chi2"):
            raise DataError(f"McNemar method must be 'exact' or 'chi2', got {method!r}")
        return cls(
            b=int(data["b"]),
            c=int(data["c"]),
            statistic=float(data["statistic"]),
            p_value=float(data["p_value"]),
            method="exact" if method == "exact" else "chi2",
            n=int(data["n"]),
        )


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

    chal = _as_bool(challenger_correct, "challenger_correct")
    champ = _as_bool(champion_correct, "champion_correct")
    _same_length(("challenger_correct", chal.shape[0]), ("champion_correct", champ.shape[0]))
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


# --------------------------------------------------------------------------------------------------------
# Calibration and log-loss
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin of a reliability diagram, covering ``(low, high]`` (the first also holds 0).

    Attributes:
        low: Lower bin edge.
        high: Upper bin edge.
        count: Rows whose confidence falls in the bin.
        mean_confidence: Mean confidence of those rows; ``None`` for an empty bin.
        accuracy: Share of those rows predicted right; ``None`` for an empty bin.
    """

    low: float
    high: float
    count: int
    mean_confidence: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationBin:
        """Rebuild a bin from its JSON form."""
        mean_confidence = data.get("mean_confidence")
        accuracy = data.get("accuracy")
        return cls(
            low=float(data["low"]),
            high=float(data["high"]),
            count=int(data["count"]),
            mean_confidence=None if mean_confidence is None else float(mean_confidence),
            accuracy=None if accuracy is None else float(accuracy),
        )


@dataclass(frozen=True)
class CalibrationReport:
    """Expected calibration error and the per-bin table behind it (for a reliability plot).

    Attributes:
        ece: Expected calibration error, ``sum(count / n * |accuracy - mean_confidence|)`` over bins.
        n: Number of rows.
        bins: Equal-width bins on [0, 1], in increasing order.
    """

    ece: float
    n: int
    bins: tuple[CalibrationBin, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationReport:
        """Rebuild a report from :meth:`to_dict` output."""
        return cls(
            ece=float(data["ece"]),
            n=int(data["n"]),
            bins=tuple(CalibrationBin.from_dict(b) for b in data["bins"]),
        )


def calibration_report(
    probabilities: npt.ArrayLike, true_idx: npt.ArrayLike, bins: int = 15
) -> CalibrationReport:
    """Reliability table and expected calibration error of predicted class probabilities.

    A row's confidence is its largest probability and its prediction the first class holding it. Rows
    are placed in ``bins`` equal-width bins on [0, 1], each covering ``(low, high]``.

    Args:
        probabilities: Class probabilities, shape ``(n, k)``; every value in [0, 1] and every row summing
            to 1 (within ``PROBABILITY_SUM_TOLERANCE``).
        true_idx: True class indices, shape ``(n,)``, in ``0..k-1``.
        bins: Number of bins (at least 1).

    Returns:
        CalibrationReport with the ECE and one entry per bin (empty bins included).

    Raises:
        DataError: Shapes disagree, the input is empty, probabilities are outside [0, 1] or do not sum
            to 1, an index is out of range, or ``bins`` is not a positive integer.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise DataError(f"bins must be a positive integer, got {bins!r}")
    probs, true = _as_probabilities(probabilities, true_idx)
    n = int(true.shape[0])
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Counting inner edges strictly below a confidence puts it in the bin (low, high].
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    ece = float(np.abs(correct_sum - conf_sum).sum() / n)
    table = tuple(
        CalibrationBin(
            low=float(edges[i]),
            high=float(edges[i + 1]),
            count=int(counts[i]),
            mean_confidence=float(conf_sum[i] / counts[i]) if counts[i] else None,
            accuracy=float(correct_sum[i] / counts[i]) if counts[i] else None,
        )
        for i in range(bins)
    )
    return CalibrationReport(ece=ece, n=n, bins=table)


def expected_calibration_error(
    probabilities: npt.ArrayLike, true_idx: npt.ArrayLike, bins: int = 15
) -> float:
    """Expected calibration error; see :func:`calibration_report` for the definition and errors."""
    return calibration_report(probabilities, true_idx, bins).ece


def log_loss(probabilities: npt.ArrayLike, true_idx: npt.ArrayLike, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the true class.

    Args:
        probabilities: Class probabilities, shape ``(n, k)`` (checked as in :func:`calibration_report`).
        true_idx: True class indices, shape ``(n,)``.
        eps: The true-class probability is clipped to ``[eps, 1 - eps]`` so a confident miss costs
            ``-log(eps)`` instead of infinity.

    Returns:
        The log-loss in nats.

    Raises:
        DataError: As :func:`calibration_report`, or ``eps`` outside [0, 0.5).
    """
    if not isinstance(eps, int | float) or not 0.0 <= float(eps) < 0.5:
        raise DataError(f"eps must be in [0, 0.5), got {eps!r}")
    probs, true = _as_probabilities(probabilities, true_idx)
    p_true = np.clip(probs[np.arange(true.shape[0]), true], eps, 1.0 - eps)
    with np.errstate(divide="ignore"):
        return float(-np.log(p_true).mean())


# --------------------------------------------------------------------------------------------------------
# Binary curves
# --------------------------------------------------------------------------------------------------------


def _binary_counts(
    scores: npt.ArrayLike, positive_true: npt.ArrayLike
) -> tuple[IntArray, IntArray, FloatArray]:
    """False and true positives at each distinct score used as threshold, highest score first."""
    s = _as_finite(scores, "scores")
    y = _as_bool(positive_true, "positive_true")
    _same_length(("scores", s.shape[0]), ("positive_true", y.shape[0]))
    positives = int(np.count_nonzero(y))
    if positives == 0 or positives == y.shape[0]:
        only = "positive" if positives else "negative"
        raise DataError(f"positive_true holds only {only} rows; a binary curve needs both classes present")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    # The last row of each run of tied scores closes that threshold.
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.shape[0] - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[ends]
    fps = ends + 1 - tps
    return fps.astype(np.int64), tps, s_sorted[ends]


def roc_curve(
    scores: npt.ArrayLike, positive_true: npt.ArrayLike, *, drop_intermediate: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Receiver operating characteristic, identical to scikit-learn's ``roc_curve``.

    Args:
        scores: Score of the positive class per row (higher means more likely positive).
        positive_true: Per row, whether it is truly positive (booleans or 0/1).
        drop_intermediate: Drop thresholds whose point lies on a straight segment between its
            neighbours (they do not change the plotted curve or the area), as scikit-learn does by default.

    Returns:
        ``(fpr, tpr, thresholds)``: the curve starts at (0, 0) with threshold ``inf``; threshold ``t``
        predicts positive for ``score >= t``; thresholds decrease.

    Raises:
        DataError: Lengths differ, input is empty or not finite, or only one class is present.
    """
    fps, tps, thresholds = _binary_counts(scores, positive_true)
    if drop_intermediate and fps.shape[0] > 2:
        corner = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        keep = np.r_[True, corner, True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.r_[0, fps]
    tps = np.r_[0, tps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def roc_auc(scores: npt.ArrayLike, positive_true: npt.ArrayLike) -> float:
    """Area under the ROC curve (trapezoidal; tied scores count one half), as ``roc_auc_score``.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    fpr, tpr, _ = roc_curve(scores, positive_true)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def precision_recall_curve(
    scores: npt.ArrayLike, positive_true: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision and recall at every distinct score, identical to scikit-learn's ``precision_recall_curve``.

    Args:
        scores: Score of the positive class per row.
        positive_true: Per row, whether it is truly positive (booleans or 0/1).

    Returns:
        ``(precision, recall, thresholds)`` with thresholds increasing; ``precision`` and ``recall`` have
        one more entry than ``thresholds``, the final point (precision 1, recall 0) having no threshold.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    fps, tps, thresholds = _binary_counts(scores, positive_true)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1].copy()


def average_precision(scores: npt.ArrayLike, positive_true: npt.ArrayLike) -> float:
    """Average precision, ``sum((R_i - R_{i-1}) * P_i)`` over thresholds, as ``average_precision_score``.

    No interpolation: each gain in recall is weighted by the precision at the threshold reaching it.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    fps, tps, _ = _binary_counts(scores, positive_true)
    precision = tps / (tps + fps)
    recall_gain = np.diff(tps, prepend=0) / tps[-1]
    return float(max(0.0, float(np.sum(recall_gain * precision))))


# --------------------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencySummary:
    """Latency of a batch of requests or predictions.

    Attributes:
        mean_ms: Mean latency in milliseconds.
        p95_ms: 95th percentile in milliseconds (linear interpolation between order statistics).
        n: Number of measurements.
    """

    mean_ms: float
    p95_ms: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySummary:
        """Rebuild a summary from :meth:`to_dict` output."""
        return cls(mean_ms=float(data["mean_ms"]), p95_ms=float(data["p95_ms"]), n=int(data["n"]))


def latency_summary(seconds: npt.ArrayLike) -> LatencySummary:
    """Mean and 95th-percentile latency of measurements given in seconds.

    Raises:
        DataError: ``seconds`` is empty, not 1-D, or holds a negative or non-finite value.
    """
    values = _as_finite(seconds, "seconds")
    negative = values < 0
    if negative.any():
        pos = int(np.flatnonzero(negative)[0])
        raise DataError(f"seconds[{pos}] = {values[pos]} is negative")
    return LatencySummary(
        mean_ms=float(values.mean() * 1000.0),
        p95_ms=float(np.quantile(values, 0.95) * 1000.0),
        n=int(values.shape[0]),
    )


# --------------------------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceScore:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceScore:
        """Rebuild a score from :meth:`to_dict` output."""
        return cls(n=int(data["n"]), accuracy=float(data["accuracy"]), macro_f1=float(data["macro_f1"]))


def _check_edges(edges: Iterable[int]) -> tuple[int, ...]:
    out = tuple(edges)
    if not out:
        raise DataError("length edges must not be empty")
    for edge in out:
        if isinstance(edge, bool) or not isinstance(edge, int | np.integer) or edge < 0:
            raise DataError(f"length edges must be non-negative integers, got {list(out)}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise DataError(f"length edges must be strictly increasing, got {list(out)}")
    return tuple(int(e) for e in out)


def length_bucket_names(edges: Iterable[int] = DEFAULT_LENGTH_EDGES) -> tuple[str, ...]:
    """Names of the buckets :func:`length_bucket` uses for ``edges``, shortest first.

    Raises:
        DataError: ``edges`` is empty, not strictly increasing, or holds a negative or non-integer value.
    """
    checked = _check_edges(edges)
    names = [f"<={checked[0]} chars"]
    for lo, hi in itertools.pairwise(checked):
        names.append(f"{hi} chars" if lo + 1 == hi else f"{lo + 1}-{hi} chars")
    names.append(f">{checked[-1]} chars")
    return tuple(names)


def length_bucket(texts: Iterable[str], edges: Iterable[int] = DEFAULT_LENGTH_EDGES) -> list[str]:
    """Bucket name of each text by its length in characters.

    With the default edges ``(50, 200)`` the buckets are ``"<=50 chars"``, ``"51-200 chars"`` and
    ``">200 chars"``; edge ``e`` closes a bucket, so a text of exactly ``e`` characters falls below it.

    Args:
        texts: The texts (an empty input gives an empty list).
        edges: Strictly increasing upper bounds, in characters, of every bucket but the last.

    Returns:
        One bucket name per text, from :func:`length_bucket_names`.

    Raises:
        DataError: A text is not a string, or ``edges`` is invalid.
    """
    checked = _check_edges(edges)
    names = length_bucket_names(checked)
    lengths = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"texts[{i}] is {type(text).__name__}, not a string")
        lengths.append(len(text))
    which = np.searchsorted(np.asarray(checked), np.asarray(lengths, dtype=np.int64), side="left")
    return [names[int(i)] for i in which]


def slice_metrics(
    true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, k: int, groups: Iterable[object]
) -> dict[str, SliceScore]:
    """Accuracy and macro-F1 of each slice of the rows, e.g. per length bucket or per source.

    Args:
        true_idx: True class indices, shape ``(n,)``.
        pred_idx: Predicted class indices, shape ``(n,)``.
        k: Number of declared classes.
        groups: One group key per row; keys are compared and named by ``str(key)`` (so a missing value
            becomes ``"None"`` or ``"nan"``, one slice).

    Returns:
        Slice name -> SliceScore, names in sorted order.

    Raises:
        DataError: The inputs are empty, differ in length, or hold an index outside ``0..k-1``.
    """
    k = _check_k(k)
    true = _as_indices(true_idx, k, "true_idx")
    pred = _as_indices(pred_idx, k, "pred_idx")
    keys = [str(g) for g in groups]
    _same_length(("true_idx", true.shape[0]), ("pred_idx", pred.shape[0]), ("groups", len(keys)))
    names, group = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    g = len(names)
    codes = group.astype(np.int64) * (k * k) + true * k + pred
    counts = np.bincount(codes, minlength=g * k * k).reshape(g, k, k)
    f1 = _macro_f1_from_confusion(counts)
    sizes = counts.sum(axis=(1, 2))
    correct = np.trace(counts, axis1=1, axis2=2)
    return {
        str(names[i]): SliceScore(
            n=int(sizes[i]), accuracy=float(correct[i] / sizes[i]), macro_f1=float(f1[i])
        )
        for i in range(g)
    }

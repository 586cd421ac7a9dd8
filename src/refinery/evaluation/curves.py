"""Scores of predicted class probabilities: log loss, calibration, ROC and precision-recall curves.

Log loss, the curves, ROC-AUC and average precision are scikit-learn's (``log_loss``, ``roc_curve``,
``roc_auc_score``, ``precision_recall_curve``, ``average_precision_score``). The functions here check
their inputs first and raise :class:`~refinery.errors.DataError` naming the argument at fault (see
:mod:`refinery.evaluation.checks`); a binary curve with one class present, where scikit-learn warns
and returns NaN or raises ``ValueError``, is refused with a message saying so.

Expected calibration error and the reliability table behind it are computed here: scikit-learn's
``calibration_curve`` is binary only and drops empty bins, while the report draws every bin of the
top-class probability of any number of classes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from refinery.errors import DataError
from refinery.evaluation.checks import (
    FloatArray,
    as_bool,
    as_finite,
    as_probabilities,
    same_length,
)
from refinery.results import Record

# --------------------------------------------------------------------------------------------------------
# Calibration and log-loss
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBin(Record):
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


@dataclass(frozen=True)
class CalibrationReport(Record):
    """Expected calibration error and the per-bin table behind it (for a reliability plot).

    Attributes:
        ece: Expected calibration error, ``sum(count / n * |accuracy - mean_confidence|)`` over bins.
        n: Number of rows.
        bins: Equal-width bins on [0, 1], in increasing order.
    """

    ece: float
    n: int
    bins: tuple[CalibrationBin, ...]


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
    probs, true = as_probabilities(probabilities, true_idx)
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
    """Mean negative log-likelihood of the true class (scikit-learn's ``log_loss``).

    Args:
        probabilities: Class probabilities, shape ``(n, k)`` (checked as in :func:`calibration_report`).
        true_idx: True class indices, shape ``(n,)``.
        eps: Probabilities are clipped to ``[eps, 1 - eps]`` first, so a confident miss costs
            ``-log(eps)`` instead of infinity (scikit-learn itself clips at float64's machine epsilon,
            which is what ``eps=0`` leaves).

    Returns:
        The log-loss in nats.

    Raises:
        DataError: As :func:`calibration_report`, or ``eps`` outside [0, 0.5).
    """
    from sklearn.metrics import log_loss as sklearn_log_loss

    if not isinstance(eps, int | float) or not 0.0 <= float(eps) < 0.5:
        raise DataError(f"eps must be in [0, 0.5), got {eps!r}")
    probs, true = as_probabilities(probabilities, true_idx)
    k = probs.shape[1]
    clipped = np.clip(probs, eps, 1.0 - eps)
    if k == 1:  # every row is class 0 with probability 1; scikit-learn needs two labels
        return float(-np.log(clipped[:, 0]).mean())
    with warnings.catch_warnings():
        # The rows were checked to sum to 1 within PROBABILITY_SUM_TOLERANCE, which admits float32
        # softmax output; scikit-learn's own check is tighter and would only warn.
        warnings.filterwarnings("ignore", message=".*do not sum to one", category=UserWarning)
        return float(sklearn_log_loss(true, clipped, labels=list(range(k))))


# --------------------------------------------------------------------------------------------------------
# Binary curves
# --------------------------------------------------------------------------------------------------------


def _binary(scores: npt.ArrayLike, positive_true: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Checked scores and truth of a binary curve: both classes must be present."""
    s = as_finite(scores, "scores")
    y = as_bool(positive_true, "positive_true")
    same_length(("scores", s.shape[0]), ("positive_true", y.shape[0]))
    positives = int(np.count_nonzero(y))
    if positives == 0 or positives == y.shape[0]:
        only = "positive" if positives else "negative"
        raise DataError(f"positive_true holds only {only} rows; a binary curve needs both classes present")
    return s, y


def roc_curve(
    scores: npt.ArrayLike, positive_true: npt.ArrayLike, *, drop_intermediate: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Receiver operating characteristic: scikit-learn's ``roc_curve``.

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
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    s, y = _binary(scores, positive_true)
    fpr, tpr, thresholds = sklearn_roc_curve(y, s, drop_intermediate=drop_intermediate)
    return fpr, tpr, thresholds


def roc_auc(scores: npt.ArrayLike, positive_true: npt.ArrayLike) -> float:
    """Area under the ROC curve (tied scores count one half): scikit-learn's ``roc_auc_score``.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    from sklearn.metrics import roc_auc_score

    s, y = _binary(scores, positive_true)
    return float(roc_auc_score(y, s))


def precision_recall_curve(
    scores: npt.ArrayLike, positive_true: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision and recall at every distinct score: scikit-learn's ``precision_recall_curve``.

    Args:
        scores: Score of the positive class per row.
        positive_true: Per row, whether it is truly positive (booleans or 0/1).

    Returns:
        ``(precision, recall, thresholds)`` with thresholds increasing; ``precision`` and ``recall`` have
        one more entry than ``thresholds``, the final point (precision 1, recall 0) having no threshold.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    from sklearn.metrics import precision_recall_curve as sklearn_precision_recall_curve

    s, y = _binary(scores, positive_true)
    precision, recall, thresholds = sklearn_precision_recall_curve(y, s)
    return precision, recall, thresholds


def average_precision(scores: npt.ArrayLike, positive_true: npt.ArrayLike) -> float:
    """Average precision, ``sum((R_i - R_{i-1}) * P_i)`` over thresholds: ``average_precision_score``.

    No interpolation: each gain in recall is weighted by the precision at the threshold reaching it.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    from sklearn.metrics import average_precision_score

    s, y = _binary(scores, positive_true)
    return float(average_precision_score(y, s))

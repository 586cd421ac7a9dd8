"""Drift signals of a window of served predictions against reference statistics kept with the model.

Descriptor drift (:mod:`refinery.monitoring.drift`) sees the surface of texts (length, punctuation) and
misses a change of topic written in the same style. The signals here look at the served model itself:

- ``embedding``: can a classifier tell the window's sentence embeddings from the reference's?
- ``confidence``: has the distribution of the model's top-class probability moved?
- ``estimated_accuracy``: the accuracy the calibrated probabilities imply, without labels
  (confidence-based performance estimation, CBPE);
- ``feedback_accuracy``: the accuracy measured on the predictions that received a label.

The reference side is a :class:`ReferenceStats`, computed at training time from held-out labelled rows
(rows the model did not train on: a model's embeddings and confidence on its own training texts differ
from those on unseen texts, and would make every served window look drifted). Every function here is
pure: numpy arrays in, a :class:`SignalResult` out. Whether a firing signal may start a retrain is the
caller's decision, read from the signal's ``fire`` setting; ``SignalResult.fired`` only says the
statistic crossed its threshold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refinery.atomic import staged_file
from refinery.config import (
    ConfidenceSignalConfig,
    EmbeddingSignalConfig,
    EstimatedAccuracyConfig,
    FeedbackAccuracyConfig,
    SignalConfig,
)
from refinery.errors import MonitoringError
from refinery.monitoring.drift import DriftResult
from refinery.results import Record, write_json

EMBEDDINGS_FILE = "embeddings.npy"
STATS_FILE = "reference_stats.json"
CV_FOLDS = 5
# Inverse regularisation of the domain classifier. Strong: with hundreds of features and a few hundred
# window rows a weakly regularised model fits noise. On SST-2 windows (bench/README.md, drift.py),
# lowering C from 0.03 to 0.001 raised the mean AUC at 20% product reviews from 0.580 to 0.589 and
# lowered the clean windows' highest AUC from 0.550 to 0.515 (20 windows each; C below 0.003 changed
# nothing measurable).
DOMAIN_C = 0.001


@dataclass(frozen=True)
class SignalResult(Record):
    """One signal's verdict on one window.

    Attributes:
        name: ``descriptors``, ``embedding``, ``confidence``, ``estimated_accuracy`` or
            ``feedback_accuracy``.
        value: The statistic: drifted share of descriptors, ROC AUC, K-S p-value, estimated or measured
            accuracy; None when it could not be measured (too few labelled predictions).
        threshold: The threshold it is compared with.
        fired: Whether the statistic crossed the threshold (whatever the signal's ``fire`` setting).
        detail: One sentence with the numbers.
    """

    name: str
    value: float | None
    threshold: float
    fired: bool
    detail: str


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """What the signals compare a window with, computed from held-out labelled rows at training time.

    Attributes:
        embeddings: float32 ``[n, d]``, a seeded sample of at most ``max_rows`` held-out embeddings.
        confidence: float32 ``[m]``, the top-class probability on every held-out row.
        calibration_x: Increasing top-class probabilities, the knots of the isotonic calibration map.
        calibration_y: P(prediction correct) at each knot; the map interpolates linearly between knots
            and is constant beyond the ends.
        accuracy: Accuracy on the held-out rows.
        rows: How many held-out rows the statistics come from (``m``).
    """

    embeddings: np.ndarray
    confidence: np.ndarray
    calibration_x: tuple[float, ...]
    calibration_y: tuple[float, ...]
    accuracy: float
    rows: int

    def calibrate(self, top_probability: np.ndarray) -> np.ndarray:
        """P(correct) of predictions with these top-class probabilities, by the stored isotonic map."""
        return np.interp(top_probability, self.calibration_x, self.calibration_y)

    def save(self, out_dir: Path) -> None:
        """Write ``embeddings.npy`` and ``reference_stats.json`` into ``out_dir``.

        Each file is written to a temporary name and renamed into place; the JSON goes last and records
        the embeddings' shape and SHA-256, so :meth:`load` recognises a pair from two different saves.
        """
        out_dir = Path(out_dir)
        embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        with staged_file(out_dir / EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as fh:
            np.save(fh, embeddings, allow_pickle=False)
        write_json(
            {
                "rows": self.rows,
                "accuracy": self.accuracy,
                "confidence": [float(c) for c in self.confidence],
                "calibration_x": list(self.calibration_x),
                "calibration_y": list(self.calibration_y),
                "embeddings_shape": list(embeddings.shape),
                "embeddings_sha256": hashlib.sha256(embeddings.tobytes()).hexdigest(),
            },
            out_dir / STATS_FILE,
        )

    @classmethod
    def load(cls, in_dir: Path) -> ReferenceStats:
        """Read what :meth:`save` wrote.

        Raises:
            MonitoringError: A file is missing or broken, or the two files are not from one save; the
                message names the file.
        """
        in_dir = Path(in_dir)
        stats_path, emb_path = in_dir / STATS_FILE, in_dir / EMBEDDINGS_FILE
        for path in (stats_path, emb_path):
            if not path.is_file():
                raise MonitoringError(f"reference statistics file not found: {path}")
        try:
            with open(stats_path, encoding="utf-8") as fh:
                data = json.load(fh)
            confidence = np.asarray(data["confidence"], dtype=np.float32)
            calibration_x = tuple(float(x) for x in data["calibration_x"])
            calibration_y = tuple(float(y) for y in data["calibration_y"])
            accuracy, rows = float(data["accuracy"]), int(data["rows"])
            shape, digest = tuple(data["embeddings_shape"]), str(data["embeddings_sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MonitoringError(f"{stats_path} is not a reference statistics file: {exc!r}") from None
        if confidence.ndim != 1 or len(calibration_x) != len(calibration_y) or not calibration_x:
            raise MonitoringError(
                f"{stats_path}: confidence must be a list and calibration_x, calibration_y non-empty lists"
                " of one length"
            )
        try:
            embeddings = np.load(emb_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise MonitoringError(f"{emb_path} is not a numpy array file: {exc!r}") from None
        if embeddings.dtype != np.float32 or embeddings.shape != shape:
            raise MonitoringError(
                f"{emb_path} holds {embeddings.dtype} {embeddings.shape}, {stats_path} expects float32 {shape}"
            )
        if hashlib.sha256(np.ascontiguousarray(embeddings).tobytes()).hexdigest() != digest:
            raise MonitoringError(f"{emb_path} does not match the checksum recorded in {stats_path}")
        return cls(
            embeddings=embeddings,
            confidence=confidence,
            calibration_x=calibration_x,
            calibration_y=calibration_y,
            accuracy=accuracy,
            rows=rows,
        )


def _matrix(values: Any, what: str, columns: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise MonitoringError(f"{what} must be a non-empty 2-D array, got shape {array.shape}")
    if columns is not None and array.shape[1] != columns:
        raise MonitoringError(f"{what} have {array.shape[1]} columns, the reference has {columns}")
    if not np.isfinite(array).all():
        raise MonitoringError(f"{what} hold {int((~np.isfinite(array)).sum())} non-finite value(s)")
    return array


def _top_probability(probabilities: Any, what: str) -> np.ndarray:
    probs = _matrix(probabilities, what)
    if probs.shape[1] < 2:
        raise MonitoringError(f"{what} need one column per class (at least 2), got {probs.shape[1]}")
    return probs.max(axis=1)


def _sample(rows: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if rows <= max_rows:
        return np.arange(rows)
    return np.sort(rng.choice(rows, size=max_rows, replace=False))


def fit_reference(
    embeddings: Any,
    probabilities: Any,
    true_idx: Any,
    *,
    max_rows: int = 2000,
    seed: int = 0,
) -> ReferenceStats:
    """Reference statistics from the model's outputs on held-out labelled rows.

    Args:
        embeddings: ``[n, d]`` sentence embeddings (:meth:`refinery.modeling.Classifier.encode`).
        probabilities: ``[n, k]`` class probabilities of the same rows.
        true_idx: ``[n]`` index of each row's true class.
        max_rows: At most this many embeddings are kept (a seeded sample): what the embedding signal's
            classifier sees per side (``EmbeddingSignalConfig.max_rows``).
        seed: Seed of the sample.

    Returns:
        The statistics; the calibration is scikit-learn's isotonic regression of "prediction correct"
        on the top-class probability, kept as its knots.

    Raises:
        MonitoringError: The arrays are empty, non-finite or of different lengths, or a true index is
            not a class of ``probabilities``.
    """
    from sklearn.isotonic import IsotonicRegression

    emb = _matrix(embeddings, "reference embeddings")
    probs = _matrix(probabilities, "reference probabilities")
    truth = np.asarray(true_idx)
    if truth.ndim != 1 or not (len(emb) == len(probs) == len(truth)):
        raise MonitoringError(
            f"reference rows differ in number: {len(emb)} embeddings, {len(probs)} probability rows,"
            f" {truth.shape} true classes"
        )
    if not np.issubdtype(truth.dtype, np.integer) or truth.min() < 0 or truth.max() >= probs.shape[1]:
        raise MonitoringError(f"true class indices must be integers in [0, {probs.shape[1]})")
    if max_rows < 1:
        raise MonitoringError(f"max_rows must be at least 1, got {max_rows}")
    top = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == truth).astype(np.float64)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(top.astype(np.float64), correct)
    keep = _sample(len(emb), max_rows, np.random.default_rng(seed))
    return ReferenceStats(
        embeddings=np.ascontiguousarray(emb[keep]),
        confidence=top.astype(np.float32),
        calibration_x=tuple(float(x) for x in iso.X_thresholds_),
        calibration_y=tuple(float(y) for y in iso.y_thresholds_),
        accuracy=float(correct.mean()),
        rows=len(truth),
    )


def _reported_only(cfg: SignalConfig) -> str:
    return "" if cfg.fire else " (reported only: fire is off)"


def descriptor_signal(drift: DriftResult, cfg: SignalConfig) -> SignalResult:
    """Today's check as a signal: the share of text descriptors (and the label) Evidently found drifted.

    Args:
        drift: :func:`refinery.monitoring.drift.detect_drift`'s result on the window.
        cfg: ``monitoring.signals.descriptors``.
    """
    drifted = ", ".join(drift.drifted_columns) or "none"
    relation = ">=" if drift.dataset_drift else "<"
    return SignalResult(
        name="descriptors",
        value=drift.drifted_share,
        threshold=drift.drift_share_threshold,
        fired=drift.dataset_drift,
        detail=(
            f"{len(drift.drifted_columns)} of {len(drift.columns)} descriptor columns drifted"
            f" (share {drift.drifted_share:.2f} {relation} {drift.drift_share_threshold:.2f}, K-S/chi-square"
            f" p < {drift.stattest_threshold:g}): {drifted}{_reported_only(cfg)}"
        ),
    )


def embedding_signal(
    reference: ReferenceStats, embeddings: Any, cfg: EmbeddingSignalConfig, seed: int = 0
) -> SignalResult:
    """Domain-classifier drift of the model's sentence embeddings.

    A logistic regression on standardised embeddings is trained to tell the reference from the window;
    its ROC AUC, averaged over stratified 5-fold cross-validation, is the statistic (0.5: the two are
    indistinguishable). Each side is a seeded sample of at most ``cfg.max_rows`` rows, so the cost does
    not grow with the window: 100k rows cost what 2,000 do.

    When a share ``s`` of the window comes from a new topic and the rest from the reference's, the AUC
    can reach at most ``0.5 + s / 2`` (those rows perfectly told apart, the others not at all): a
    threshold of 0.6 could never flag a 20% mix. The default ``max_auc`` of 0.55 sits 2.5-3 standard
    deviations above the AUC of clean 400-row windows: on SST-2 (bench/README.md) 4 of 1,400 crossed
    it, and every window with 20% product reviews. Smaller windows spread the AUC wider under no drift,
    and one threshold then raises more false alarms: 7 of 100 clean windows of 200 rows crossed 0.55,
    9 of 100 of 100 rows.

    This is scikit-learn rather than Evidently 0.7.23's embedding drift, measured for the choice
    (bench/drift.py, bench/README.md). Its ``EmbeddingsDrift`` metric (legacy ``EmbeddingsDriftMetric``)
    fits a t-SNE of up to 5,000 rows for its plot on every call: 31-53 s for one 400-row window against
    2,000 reference rows on two cores, where this takes 0.2 s. Its ``ModelDriftMethod`` alone is fast,
    but scores an SGD classifier on unscaled features on one 50/50 split: on SST-2 windows it raised 1
    false alarm in 20 clean windows and detected 70% of the windows with 20% product reviews, against
    0 and 100% here.

    Args:
        reference: The reference statistics (their ``embeddings``).
        embeddings: ``[n, d]`` embeddings of the window's texts.
        cfg: ``monitoring.signals.embedding`` (``max_auc``, ``max_rows``).
        seed: Seeds the window sample and the folds.

    Raises:
        MonitoringError: The window is empty, has another width than the reference, non-finite values,
            or fewer rows than folds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref = _matrix(reference.embeddings, "reference embeddings")
    cur = _matrix(embeddings, "window embeddings", columns=ref.shape[1])
    rng = np.random.default_rng(seed)
    ref = ref[_sample(len(ref), cfg.max_rows, rng)]
    cur = cur[_sample(len(cur), cfg.max_rows, rng)]
    if min(len(ref), len(cur)) < CV_FOLDS:
        raise MonitoringError(
            f"embedding drift needs at least {CV_FOLDS} rows per side, got {len(cur)} window and {len(ref)}"
            " reference rows"
        )
    x = np.concatenate([ref, cur]).astype(np.float64)
    y = np.concatenate([np.zeros(len(ref), dtype=int), np.ones(len(cur), dtype=int)])
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=DOMAIN_C, class_weight="balanced", max_iter=1000)
    )
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
    auc = float(np.mean(cross_val_score(model, x, y, cv=folds, scoring="roc_auc")))
    fired = auc > cfg.max_auc
    return SignalResult(
        name="embedding",
        value=auc,
        threshold=cfg.max_auc,
        fired=fired,
        detail=(
            f"domain classifier ROC AUC {auc:.3f} {'>' if fired else '<='} {cfg.max_auc:.3f} over"
            f" {len(cur)} window / {len(ref)} reference embeddings ({CV_FOLDS}-fold cross-validated)"
            f"{_reported_only(cfg)}"
        ),
    )


def confidence_signal(
    reference: ReferenceStats, probabilities: Any, cfg: ConfidenceSignalConfig
) -> SignalResult:
    """Two-sample Kolmogorov-Smirnov test of the top-class probability, window against reference.

    scipy's ``ks_2samp`` (two-sided, exact or asymptotic as scipy picks) is called directly: it is the
    very function behind Evidently's ``ks`` stat test, and a one-column Evidently report around it
    would add a Report and a Dataset per window and nothing to the number.

    Args:
        reference: The reference statistics (their ``confidence``).
        probabilities: ``[n, k]`` class probabilities of the window.
        cfg: ``monitoring.signals.confidence`` (``p_value``).

    Raises:
        MonitoringError: The window is empty, not 2-D, has fewer than 2 columns or non-finite values.
    """
    from scipy.stats import ks_2samp

    top = _top_probability(probabilities, "window probabilities")
    ref = np.asarray(reference.confidence, dtype=np.float64)
    if ref.size == 0:
        raise MonitoringError("reference statistics hold no confidence values")
    p_value = float(ks_2samp(ref, top.astype(np.float64)).pvalue)
    fired = p_value < cfg.p_value
    return SignalResult(
        name="confidence",
        value=p_value,
        threshold=cfg.p_value,
        fired=fired,
        detail=(
            f"K-S p-value {p_value:.3g} {'<' if fired else '>='} {cfg.p_value:g} for the top-class probability:"
            f" median {float(np.median(top)):.3f} over {len(top)} window rows against"
            f" {float(np.median(ref)):.3f} over {ref.size} reference rows{_reported_only(cfg)}"
        ),
    )


def estimated_accuracy_signal(
    reference: ReferenceStats, probabilities: Any, cfg: EstimatedAccuracyConfig
) -> SignalResult:
    """Accuracy estimated without labels: the mean calibrated top-class probability (CBPE).

    Each prediction's top-class probability is mapped to P(correct) by the isotonic calibration fitted
    on the held-out rows; their mean estimates the window's accuracy. It assumes the calibration still
    holds on the window: drift that makes the model confidently wrong is invisible to it.

    Args:
        reference: The reference statistics (calibration and ``accuracy``).
        probabilities: ``[n, k]`` class probabilities of the window.
        cfg: ``monitoring.signals.estimated_accuracy`` (``max_drop``).

    Raises:
        MonitoringError: The window is empty, not 2-D, has fewer than 2 columns or non-finite values.
    """
    top = _top_probability(probabilities, "window probabilities")
    estimate = float(np.mean(reference.calibrate(top)))
    drop = reference.accuracy - estimate
    fired = drop > cfg.max_drop
    return SignalResult(
        name="estimated_accuracy",
        value=estimate,
        threshold=reference.accuracy - cfg.max_drop,
        fired=fired,
        detail=(
            f"estimated accuracy {estimate:.3f} over {len(top)} predictions, {drop:+.3f} below the reference"
            f" accuracy {reference.accuracy:.3f} (max drop {cfg.max_drop:g}){_reported_only(cfg)}"
        ),
    )


def _labelled(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return str(value) != ""


def feedback_accuracy_signal(
    reference: ReferenceStats,
    predicted: Sequence[str],
    true: Sequence[str | None],
    cfg: FeedbackAccuracyConfig,
) -> SignalResult:
    """Accuracy measured on the window's predictions that received a label.

    Args:
        reference: The reference statistics (their ``accuracy``).
        predicted: The predicted label of each prediction in the window.
        true: The label given as feedback, aligned with ``predicted``; None, NaN or "" where none was
            given.
        cfg: ``monitoring.signals.feedback_accuracy`` (``min_rows``, ``max_drop``).

    Returns:
        The signal; with fewer than ``cfg.min_rows`` labelled predictions its value is None and it does
        not fire.

    Raises:
        MonitoringError: ``predicted`` and ``true`` differ in length.
    """
    if len(predicted) != len(true):
        raise MonitoringError(f"{len(predicted)} predictions but {len(true)} feedback labels")
    pairs = [(str(p), str(t)) for p, t in zip(predicted, true, strict=True) if _labelled(t)]
    threshold = reference.accuracy - cfg.max_drop
    if len(pairs) < cfg.min_rows:
        return SignalResult(
            name="feedback_accuracy",
            value=None,
            threshold=threshold,
            fired=False,
            detail=(
                f"not measured: {len(pairs)} of {len(predicted)} predictions labelled, {cfg.min_rows} needed"
            ),
        )
    accuracy = sum(p == t for p, t in pairs) / len(pairs)
    drop = reference.accuracy - accuracy
    fired = drop > cfg.max_drop
    return SignalResult(
        name="feedback_accuracy",
        value=accuracy,
        threshold=threshold,
        fired=fired,
        detail=(
            f"accuracy {accuracy:.3f} on {len(pairs)} labelled of {len(predicted)} predictions,"
            f" {drop:+.3f} below the reference accuracy {reference.accuracy:.3f} (max drop {cfg.max_drop:g})"
            f"{_reported_only(cfg)}"
        ),
    )

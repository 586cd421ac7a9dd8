"""The drift signals on synthetic embeddings and probabilities (seeded): each fires on a constructed shift
and stays quiet on a resample of the reference; reference statistics survive a save and load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refinery.config import (
    ConfidenceSignalConfig,
    EmbeddingSignalConfig,
    EstimatedAccuracyConfig,
    FeedbackAccuracyConfig,
    SignalConfig,
)
from refinery.errors import MonitoringError
from refinery.monitoring.drift import ColumnDrift, DriftResult
from refinery.monitoring.signals import (
    EMBEDDINGS_FILE,
    STATS_FILE,
    ReferenceStats,
    SignalResult,
    confidence_signal,
    descriptor_signal,
    embedding_signal,
    estimated_accuracy_signal,
    feedback_accuracy_signal,
    fit_reference,
)

DIM = 24
CLASSES = 3


def embeddings(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Gaussian sentence embeddings; ``shift`` moves the mean along every axis (another topic)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, DIM)) + shift).astype(np.float32)


def calibrated(n: int, seed: int, concentration: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from a Dirichlet and true classes drawn from them: a perfectly calibrated model,
    whose accuracy is its mean top-class probability. A higher concentration: a less confident model."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([concentration] * CLASSES, size=n).astype(np.float32)
    true = np.array([rng.choice(CLASSES, p=p / p.sum()) for p in probs.astype(np.float64)])
    return probs, true


@pytest.fixture(scope="module")
def reference() -> ReferenceStats:
    probs, true = calibrated(3000, seed=0)
    return fit_reference(embeddings(3000, seed=0), probs, true, max_rows=1000, seed=0)


def test_fit_reference_samples_embeddings_and_calibrates(reference: ReferenceStats) -> None:
    assert reference.embeddings.shape == (1000, DIM) and reference.embeddings.dtype == np.float32
    assert reference.confidence.shape == (3000,) and reference.confidence.dtype == np.float32
    assert reference.rows == 3000
    x, y = np.array(reference.calibration_x), np.array(reference.calibration_y)
    assert len(x) == len(y) >= 2
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0) and y.min() >= 0 and y.max() <= 1
    # Isotonic regression keeps the mean: on its own rows the estimate is the accuracy.
    assert float(np.mean(reference.calibrate(reference.confidence))) == pytest.approx(
        reference.accuracy, abs=1e-6
    )
    again = fit_reference(embeddings(3000, seed=0), *calibrated(3000, seed=0), max_rows=1000, seed=0)
    assert np.array_equal(again.embeddings, reference.embeddings)


def test_fit_reference_rejects_rows_that_do_not_line_up() -> None:
    probs, true = calibrated(100, seed=1)
    with pytest.raises(MonitoringError, match="differ in number: 99 embeddings, 100 probability rows"):
        fit_reference(embeddings(99, seed=1), probs, true)
    with pytest.raises(MonitoringError, match=r"true class indices must be integers in \[0, 3\)"):
        fit_reference(embeddings(100, seed=1), probs, np.full(100, 3))
    with pytest.raises(MonitoringError, match="non-finite"):
        fit_reference(np.full((100, DIM), np.nan), probs, true)


def test_embedding_signal_quiet_on_a_resample(reference: ReferenceStats) -> None:
    result = embedding_signal(reference, embeddings(400, seed=11), EmbeddingSignalConfig(max_auc=0.55))

    assert result.name == "embedding" and result.fired is False
    assert result.value is not None and 0.4 < result.value < 0.55
    assert result.threshold == 0.55
    assert "400 window / 1000 reference embeddings" in result.detail


def test_embedding_signal_fires_on_a_topic_mixed_in(reference: ReferenceStats) -> None:
    # 30% of the window from another region of the embedding space.
    window = np.concatenate([embeddings(280, seed=12), embeddings(120, seed=13, shift=1.0)])
    result = embedding_signal(reference, window, EmbeddingSignalConfig(max_auc=0.55))

    assert result.fired is True
    assert result.value is not None and result.value > 0.6
    assert result.detail.startswith(f"domain classifier ROC AUC {result.value:.3f} > 0.550")


def test_embedding_signal_samples_large_sides_and_checks_shapes(reference: ReferenceStats) -> None:
    cfg = EmbeddingSignalConfig(max_rows=300)
    result = embedding_signal(reference, embeddings(5000, seed=14), cfg)
    assert "300 window / 300 reference embeddings" in result.detail

    with pytest.raises(MonitoringError, match="window embeddings have 8 columns, the reference has 24"):
        embedding_signal(reference, np.zeros((50, 8), dtype=np.float32), cfg)
    with pytest.raises(MonitoringError, match="non-empty 2-D array"):
        embedding_signal(reference, np.zeros((0, DIM), dtype=np.float32), cfg)
    with pytest.raises(MonitoringError, match="at least 5 rows per side, got 3 window"):
        embedding_signal(reference, embeddings(3, seed=15), cfg)


def test_confidence_signal(reference: ReferenceStats) -> None:
    cfg = ConfidenceSignalConfig()
    same = confidence_signal(reference, calibrated(400, seed=21)[0], cfg)
    # A less confident model: flatter probability vectors.
    shifted = confidence_signal(reference, calibrated(400, seed=22, concentration=2.0)[0], cfg)

    assert same.fired is False and same.value is not None and same.value >= cfg.p_value
    assert shifted.fired is True and shifted.value is not None and shifted.value < 1e-6
    assert "(reported only: fire is off)" in shifted.detail  # fire is off by default
    with pytest.raises(MonitoringError, match="at least 2"):
        confidence_signal(reference, np.ones((10, 1), dtype=np.float32), cfg)


def test_estimated_accuracy_tracks_true_accuracy(reference: ReferenceStats) -> None:
    cfg = EstimatedAccuracyConfig(max_drop=0.05)
    for seed, concentration in ((31, 0.5), (32, 2.0)):
        probs, true = calibrated(2000, seed=seed, concentration=concentration)
        result = estimated_accuracy_signal(reference, probs, cfg)
        assert result.value is not None
        assert result.value == pytest.approx(float(np.mean(probs.argmax(axis=1) == true)), abs=0.03)

    same = estimated_accuracy_signal(reference, calibrated(400, seed=33)[0], cfg)
    worse = estimated_accuracy_signal(reference, calibrated(400, seed=34, concentration=2.0)[0], cfg)
    assert same.fired is False
    assert worse.fired is True
    assert worse.threshold == pytest.approx(reference.accuracy - 0.05)
    assert worse.value is not None and reference.accuracy - worse.value > 0.05


def test_feedback_accuracy_needs_min_rows(reference: ReferenceStats) -> None:
    cfg = FeedbackAccuracyConfig(min_rows=50)
    predicted = ["a"] * 400
    true: list[str | None] = ["b"] * 49 + [None] * 300 + [""] * 51  # 49 labelled, all wrong

    result = feedback_accuracy_signal(reference, predicted, true, cfg)

    assert result.value is None and result.fired is False
    assert result.detail == "not measured: 49 of 400 predictions labelled, 50 needed"


def test_feedback_accuracy_fires_on_a_drop(reference: ReferenceStats) -> None:
    cfg = FeedbackAccuracyConfig(min_rows=50, max_drop=0.05)
    right = round(reference.accuracy * 100)
    good = feedback_accuracy_signal(reference, ["a"] * 100, ["a"] * right + ["b"] * (100 - right), cfg)
    bad = feedback_accuracy_signal(reference, ["a"] * 100, ["a"] * (right - 20) + ["b"] * (120 - right), cfg)

    assert good.fired is False and good.value == pytest.approx(right / 100)
    assert bad.fired is True and bad.value == pytest.approx((right - 20) / 100)
    assert "on 100 labelled of 100 predictions" in bad.detail
    with pytest.raises(MonitoringError, match="3 predictions but 2 feedback labels"):
        feedback_accuracy_signal(reference, ["a", "b", "c"], ["a", "b"], cfg)


def _drift(drifted: list[str], share_threshold: float = 0.5) -> DriftResult:
    names = ["text_length", "word_count", "question_count", "label"]
    columns = {
        n: ColumnDrift(
            score=0.01 if n in drifted else 0.5,
            method="ks",
            threshold=0.05,
            drifted=n in drifted,
            kind="numerical",
        )
        for n in names
    }
    share = len(drifted) / len(names)
    return DriftResult(
        dataset_drift=share >= share_threshold,
        drifted_share=share,
        drifted_columns=drifted,
        columns=columns,
        reference_rows=100,
        current_rows=50,
        drift_share_threshold=share_threshold,
        stattest_threshold=0.05,
        report="drift_report.html",
    )


def test_descriptor_signal_wraps_the_drift_result() -> None:
    fired = descriptor_signal(_drift(["text_length", "word_count"]), SignalConfig())
    quiet = descriptor_signal(_drift(["label"]), SignalConfig(fire=False))

    assert (fired.name, fired.value, fired.threshold, fired.fired) == ("descriptors", 0.5, 0.5, True)
    assert fired.detail.startswith("2 of 4 descriptor columns drifted (share 0.50 >= 0.50")
    assert fired.detail.endswith(": text_length, word_count")
    assert quiet.fired is False and quiet.value == 0.25
    assert quiet.detail.endswith("label (reported only: fire is off)")


def test_signal_result_is_json() -> None:
    result = SignalResult(
        "embedding", np.float64(0.61), 0.55, True, "domain classifier ROC AUC 0.610 > 0.550"
    )
    assert json.loads(json.dumps(result.to_dict())) == {
        "name": "embedding",
        "value": 0.61,
        "threshold": 0.55,
        "fired": True,
        "detail": "domain classifier ROC AUC 0.610 > 0.550",
    }


def test_reference_round_trip(reference: ReferenceStats, tmp_path: Path) -> None:
    reference.save(tmp_path / "stats")
    loaded = ReferenceStats.load(tmp_path / "stats")

    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == [EMBEDDINGS_FILE, STATS_FILE]
    assert np.array_equal(loaded.embeddings, reference.embeddings) and loaded.embeddings.dtype == np.float32
    assert np.array_equal(loaded.confidence, reference.confidence)
    assert loaded.calibration_x == reference.calibration_x
    assert loaded.calibration_y == reference.calibration_y
    assert (loaded.accuracy, loaded.rows) == (reference.accuracy, reference.rows)
    window = embeddings(200, seed=41)
    assert embedding_signal(loaded, window, EmbeddingSignalConfig()) == embedding_signal(
        reference, window, EmbeddingSignalConfig()
    )


def test_reference_load_names_the_missing_or_broken_file(reference: ReferenceStats, tmp_path: Path) -> None:
    with pytest.raises(MonitoringError, match=f"not found: {tmp_path / STATS_FILE}"):
        ReferenceStats.load(tmp_path)

    reference.save(tmp_path)
    stats = (tmp_path / STATS_FILE).read_text(encoding="utf-8")
    (tmp_path / STATS_FILE).write_text(stats[: len(stats) // 2], encoding="utf-8")
    with pytest.raises(MonitoringError, match=f"{tmp_path / STATS_FILE} is not a reference statistics file"):
        ReferenceStats.load(tmp_path)

    reference.save(tmp_path)
    (tmp_path / EMBEDDINGS_FILE).write_bytes(b"not numpy")
    with pytest.raises(MonitoringError, match=f"{tmp_path / EMBEDDINGS_FILE} is not a numpy array file"):
        ReferenceStats.load(tmp_path)

    # Embeddings of another save next to this save's JSON.
    np.save(tmp_path / EMBEDDINGS_FILE, reference.embeddings[::-1].copy(), allow_pickle=False)
    with pytest.raises(MonitoringError, match="does not match the checksum"):
        ReferenceStats.load(tmp_path)

    (tmp_path / EMBEDDINGS_FILE).unlink()
    with pytest.raises(MonitoringError, match=f"not found: {tmp_path / EMBEDDINGS_FILE}"):
        ReferenceStats.load(tmp_path)

"""Evaluate the challenger, and the current champion, on one held-out test set.

Both models score the same rows of ``test.parquet`` so the gate compares like with like. Each gets
accuracy, macro-F1, per-class scores, the confusion matrix, log loss, expected calibration error,
ROC-AUC and average precision (binary tasks), per-example latency (``evaluation.latency_samples`` texts
predicted one at a time) and the same scores per slice: each value of ``data.slice_columns`` and each
text-length bucket (``evaluation.length_buckets``). With a champion, the two are compared with a paired
bootstrap of the macro-F1 difference and McNemar's test (``gate.significance``); with
``data.retention_uri``, both are also scored on that earlier-domain set.

When the run added new labelled rows, the test set carries a ``domain`` column (``established``:
``data.uri``'s test rows, ``new``: held-out new rows); both are slices, and the significance tests
compare the models on the new rows (``gate.significance.on``). A challenger whose weights hash the same
as the champion's, or that predicts the champion's label on every test row, is recorded as ``no_change``:
the gate refuses it before any other rule.

The challenger's predictions on the test rows also become the reference statistics drift monitoring
compares served windows with (:class:`refinery.monitoring.signals.ReferenceStats`, in ``monitoring/``).

The step writes ``evaluation.json`` (the typed :class:`EvaluationResult`), ``predictions.parquet`` (one
row per test text: label, slices, each model's prediction and class probabilities),
``confusion_matrix.png`` and ``monitoring/`` (the reference statistics), staged in a folder beside
``out_dir`` and published with :func:`refinery.atomic.staged_dir` (``evaluation.json`` last).

This module is the step: it reads the test and retention sets, loads and runs the models, and publishes
the files. The numbers come from :mod:`refinery.evaluation.scoring` (one model's scores, the comparison)
and the record is :class:`refinery.evaluation.result.EvaluationResult`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.atomic import staged_dir
from refinery.data.sources import DOMAIN_SLICE
from refinery.errors import DataError, RefineryError, RegistryError, TrainingError
from refinery.evaluation.metrics import LatencySummary, latency_summary
from refinery.evaluation.result import EVALUATION_FILE, EvaluationResult, RetentionResult
from refinery.evaluation.scoring import compare, label_indices, no_change, predictions_frame, score

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from refinery.config import RunConfig
    from refinery.evaluation.result import Comparison
    from refinery.modeling import Classifier
    from refinery.monitoring.signals import ReferenceStats

# EvaluationResult and EVALUATION_FILE live in refinery.evaluation.result; callers may take them from
# the step that writes them.
__all__ = [
    "CONFUSION_MATRIX_FILE",
    "EVALUATION_FILE",
    "MONITORING_DIR",
    "PREDICTIONS_FILE",
    "EvaluationResult",
    "evaluate",
    "plot_confusion_matrices",
    "read_retention_set",
    "read_test_set",
    "roc_points",
]

PREDICTIONS_FILE = "predictions.parquet"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
MONITORING_DIR = "monitoring"  # the reference statistics drift monitoring reads, kept with the version


def read_test_set(data_dir: Path, labels: Sequence[str], slice_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``test.parquet`` from a prepared dataset directory and check its columns and labels.

    Returns:
        Columns ``text``, ``label``, each of ``slice_columns`` and, when the run added new labelled rows,
        ``domain`` (written by prepare_data), all strings.

    Raises:
        DataError: The file is missing, unreadable, empty, lacks ``text``/``label`` or a slice column,
            or holds an undeclared label.
    """
    import pandas as pd

    path = Path(data_dir) / "test.parquet"
    if not path.is_file():
        raise DataError(f"test set not found: {path} (run prepare_data first)")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"cannot read test set {path}: {exc}") from exc
    missing = [c for c in ("text", "label", *slice_columns) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}; found {list(frame.columns)} (slice columns come from"
            " data.slice_columns: prepare the data again after adding one)"
        )
    if frame.empty:
        raise DataError(f"{path} has no rows; cannot evaluate on an empty test set")
    if DOMAIN_SLICE in frame.columns and DOMAIN_SLICE not in slice_columns:
        slice_columns = (*slice_columns, DOMAIN_SLICE)
    frame = pd.DataFrame({c: frame[c].astype(str) for c in ("text", "label", *slice_columns)})
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise DataError(f"{path} column 'label' holds undeclared label(s) {unknown}; declared {list(labels)}")
    return frame.reset_index(drop=True)


def read_retention_set(cfg: RunConfig) -> pd.DataFrame:
    """Read ``data.retention_uri`` with the data section's format and columns: ``text`` and ``label``.

    Texts are cleaned as prepare_data cleans them and blank ones dropped.

    Raises:
        DataError: The file cannot be read, lacks a column, is empty or holds an undeclared label.
    """
    import pandas as pd

    from refinery.data.load import read_table
    from refinery.data.text import clean_texts

    data = cfg.data
    uri = str(data.retention_uri)
    frame = read_table(data.model_copy(update={"uri": uri}))
    missing = [c for c in (data.text_column, data.label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"retention set {uri} (data.retention_uri) lacks column(s) {missing}; found {list(frame.columns)}"
        )
    table = pd.DataFrame({"text": clean_texts(frame[data.text_column]), "label": frame[data.label_column]})
    table = table[(table["text"] != "") & table["label"].notna()].reset_index(drop=True)
    if table.empty:
        raise DataError(f"retention set {uri} (data.retention_uri) has no labelled rows")
    unknown = sorted(set(table["label"]) - set(data.labels))
    if unknown:
        raise DataError(
            f"retention set {uri} (data.retention_uri) holds undeclared label(s) {unknown};"
            f" declared {list(data.labels)}"
        )
    return table


def _load(
    model_dir: Path, labels: Sequence[str], max_length: int, role: str, version: str | None
) -> Classifier:
    from refinery.modeling import load_classifier

    who = (
        f"champion version {version} ({model_dir})"
        if role == "champion" and version
        else f"{role} {model_dir}"
    )
    error_cls = RegistryError if role == "champion" else TrainingError
    try:
        classifier = load_classifier(Path(model_dir), max_length=max_length)
    except RefineryError as exc:
        raise error_cls(f"cannot load the {who}: {exc}") from exc
    model_labels = tuple(str(v) for v in classifier.labels)
    if set(model_labels) != set(labels) or len(model_labels) != len(labels):
        raise error_cls(
            f"the {who} predicts labels {list(model_labels)}, but the configuration declares "
            f"{list(labels)} (data.labels); it cannot be scored on this test set"
        )
    return classifier


def _probabilities(
    classifier: Classifier, texts: list[str], labels: Sequence[str], batch_size: int
) -> np.ndarray:
    """Class probabilities with columns in the declared label order (a model may number them otherwise)."""
    return _in_label_order(classifier, classifier.predict_proba(texts, batch_size=batch_size), labels)


def _in_label_order(classifier: Classifier, probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    order = [list(classifier.labels).index(label) for label in labels]
    return probabilities[:, order]


def _latency(classifier: Classifier, texts: list[str], samples: int, seed: int) -> LatencySummary | None:
    """Seconds to predict one text alone, over a seeded sample of the texts (after one warm-up call)."""
    import numpy as np

    if samples == 0 or not texts:
        return None
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(texts), size=min(samples, len(texts)), replace=False)
    classifier.predict_proba([texts[int(picked[0])]], batch_size=1)
    seconds = []
    for i in picked:
        started = time.perf_counter()
        classifier.predict_proba([texts[int(i)]], batch_size=1)
        seconds.append(time.perf_counter() - started)
    return latency_summary(seconds)


def roc_points(
    labels: Sequence[str], predictions: pd.DataFrame
) -> tuple[list[float], list[float], list[float]] | None:
    """The challenger's ROC curve as (fpr, tpr, thresholds) lists for KFP's ClassificationMetrics.

    Binary tasks only (the second declared label is the positive class) and only when the test set
    holds both classes; None otherwise. The first threshold, +inf by convention, is written as 1.0
    (no probability exceeds it), since the artifact's metadata is JSON.
    """
    import numpy as np

    from refinery.evaluation.curves import roc_curve

    if len(labels) != 2:
        return None
    positive = (predictions["label"] == labels[1]).to_numpy()
    if positive.all() or not positive.any():
        return None
    scores = np.array([row[1] for row in predictions["challenger_proba"]], dtype=float)
    fpr, tpr, thresholds = roc_curve(scores, positive)
    return fpr.tolist(), tpr.tolist(), np.minimum(thresholds, 1.0).tolist()


def plot_confusion_matrices(result: EvaluationResult, path: Path) -> Path:
    """Draw the challenger's (and the champion's) confusion matrix as a PNG: the figure the HTML report
    shows (:func:`refinery.evaluation.plots.confusion_matrix_figure`)."""
    from refinery.evaluation.plots import confusion_matrix_figure

    confusion_matrix_figure(result).savefig(path, dpi=110)
    return path


def _load_models(
    cfg: RunConfig, challenger_dir: Path, champion_dir: Path | None, champion_version: str | None
) -> dict[str, Classifier]:
    labels, max_length = tuple(cfg.data.labels), cfg.model.max_length
    models = {"challenger": _load(Path(challenger_dir), labels, max_length, "challenger", None)}
    if champion_dir is not None:
        models["champion"] = _load(Path(champion_dir), labels, max_length, "champion", champion_version)
    return models


def _score_retention(
    cfg: RunConfig, models: dict[str, Classifier], retention: pd.DataFrame | None
) -> tuple[RetentionResult | None, dict[str, np.ndarray]]:
    """Both models on the retention set, and their probabilities there (none without one)."""
    if retention is None:
        return None, {}
    labels, batch_size = tuple(cfg.data.labels), cfg.training.eval_batch_size
    probabilities = {
        role: _probabilities(m, retention["text"].tolist(), labels, batch_size) for role, m in models.items()
    }
    kept = {role: score(cfg, retention, p) for role, p in probabilities.items()}
    result = RetentionResult(
        uri=str(cfg.data.retention_uri),
        n=len(retention),
        challenger=kept["challenger"],
        champion=kept.get("champion"),
    )
    return result, probabilities


def _publish(
    out_dir: Path,
    cfg: RunConfig,
    test: pd.DataFrame,
    probabilities: dict[str, np.ndarray],
    result: EvaluationResult,
    reference: ReferenceStats,
) -> None:
    """Write every output into a staging folder and publish it; ``evaluation.json`` lands last.

    An output folder that already holds files (a KFP artifact path) is filled entry by entry, each
    rename atomic.
    """
    labels = tuple(cfg.data.labels)
    with staged_dir(out_dir, mode="merge", last=EVALUATION_FILE) as staging:
        predictions = predictions_frame(
            test, labels, probabilities["challenger"], probabilities.get("champion"), cfg
        )
        predictions.to_parquet(staging / PREDICTIONS_FILE, index=False)
        plot_confusion_matrices(result, staging / CONFUSION_MATRIX_FILE)
        reference.save(staging / MONITORING_DIR)
        result.write_json(staging / EVALUATION_FILE)


def evaluate(
    cfg: RunConfig,
    data_dir: Path,
    challenger_dir: Path,
    champion_dir: Path | None,
    out_dir: Path,
    champion_version: str | None = None,
) -> EvaluationResult:
    """Score the challenger, and the champion when there is one, on the prepared test set.

    Args:
        cfg: The run configuration (``data.labels``, ``data.slice_columns``, ``data.retention_uri``,
            ``model.max_length``, ``training.eval_batch_size``, ``evaluation``, ``gate.significance``).
        data_dir: Prepared dataset directory holding ``test.parquet``.
        challenger_dir: The newly fine-tuned model directory.
        champion_dir: The current champion's model directory, or None for the first model.
        out_dir: Where ``evaluation.json``, ``predictions.parquet`` and ``confusion_matrix.png`` go.
        champion_version: Registry version of the champion, recorded in the result.

    Returns:
        The EvaluationResult also written to ``out_dir/evaluation.json``.

    Raises:
        DataError: The test set (or the retention set) is missing, empty or holds undeclared labels.
        TrainingError: The challenger cannot be loaded or predicts another label set.
        RegistryError: The champion cannot be loaded or predicts another label set.
    """
    from refinery.monitoring.signals import fit_reference

    labels = tuple(cfg.data.labels)
    test = read_test_set(Path(data_dir), labels, tuple(cfg.data.slice_columns))
    slice_columns = tuple(c for c in test.columns if c not in ("text", "label"))
    retention_set = read_retention_set(cfg) if cfg.data.retention_uri else None
    texts = test["text"].tolist()
    batch_size = cfg.training.eval_batch_size
    samples, seed = cfg.evaluation.latency_samples, cfg.gate.significance.seed

    models = _load_models(cfg, challenger_dir, champion_dir, champion_version)
    # The challenger in one pass with its sentence embeddings: the reference drift monitoring keeps.
    ours, embeddings = models["challenger"].encode(texts, batch_size=batch_size)
    probabilities = {"challenger": _in_label_order(models["challenger"], ours, labels)}
    if "champion" in models:
        probabilities["champion"] = _probabilities(models["champion"], texts, labels, batch_size)
    metrics = {
        role: score(cfg, test, probabilities[role], _latency(m, texts, samples, seed), slice_columns)
        for role, m in models.items()
    }
    retention, kept_probabilities = _score_retention(cfg, models, retention_set)
    comparison: Comparison | None = None
    unchanged: str | None = None
    if champion_dir is not None:
        who = f"champion v{champion_version}" if champion_version else "the champion"
        scored = [probabilities, *([kept_probabilities] if kept_probabilities else [])]
        unchanged = no_change(
            Path(challenger_dir),
            Path(champion_dir),
            [p["challenger"] for p in scored],
            [p["champion"] for p in scored],
            who,
        )
        if cfg.gate.significance.mode != "off":
            comparison = compare(cfg, test, probabilities["challenger"], probabilities["champion"])
    result = EvaluationResult(
        labels=labels,
        test_rows=len(test),
        challenger=metrics["challenger"],
        champion=metrics.get("champion"),
        champion_version=champion_version if "champion" in models else None,
        comparison=comparison,
        retention=retention,
        no_change=unchanged,
    )
    reference = fit_reference(embeddings, probabilities["challenger"], label_indices(test, labels))
    _publish(Path(out_dir), cfg, test, probabilities, result, reference)
    return result

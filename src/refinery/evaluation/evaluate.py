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
``confusion_matrix.png`` and ``monitoring/`` (the reference statistics).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.data.sources import DOMAIN_SLICE, NEW
from refinery.errors import DataError, RefineryError, RegistryError, TrainingError
from refinery.evaluation.metrics import ModelMetrics, classification_metrics
from refinery.evaluation.stats import (
    BootstrapResult,
    LatencySummary,
    McNemarResult,
    SliceScore,
    average_precision,
    expected_calibration_error,
    latency_summary,
    length_bucket,
    log_loss,
    mcnemar,
    paired_bootstrap,
    roc_auc,
    slice_metrics,
)
from refinery.results import load_result, to_jsonable, write_json

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from refinery.config import RunConfig
    from refinery.modeling import Classifier

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.parquet"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
LENGTH_SLICE = "length"  # the slice "column" of text-length buckets
MONITORING_DIR = "monitoring"  # the reference statistics drift monitoring reads, kept with the version


@dataclass(frozen=True)
class Comparison:
    """Challenger against champion on the same rows: the statistics the gate's significance rules read.

    Attributes:
        bootstrap: The paired bootstrap of the macro-F1 difference.
        mcnemar: McNemar's test on the rows exactly one model gets right.
        on: Which test rows: ``all``, or ``new`` (the held-out new labelled rows).
        rows: How many rows were compared.
    """

    bootstrap: BootstrapResult
    mcnemar: McNemarResult
    on: str = "all"
    rows: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(
            BootstrapResult.from_dict(data["bootstrap"]),
            McNemarResult.from_dict(data["mcnemar"]),
            on=str(data.get("on", "all")),
            rows=int(data.get("rows", 0)),
        )


@dataclass(frozen=True)
class RetentionResult:
    """Both models on the retention set (``data.retention_uri``), the check against forgetting."""

    uri: str
    n: int
    challenger: ModelMetrics
    champion: ModelMetrics | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetentionResult:
        champion = data.get("champion")
        return cls(
            uri=str(data["uri"]),
            n=int(data["n"]),
            challenger=ModelMetrics.from_dict(data["challenger"]),
            champion=ModelMetrics.from_dict(champion) if champion is not None else None,
        )


@dataclass(frozen=True)
class EvaluationResult:
    """Challenger and champion metrics on the same test set.

    Attributes:
        labels: Declared labels, in class-index order (the confusion-matrix order).
        test_rows: Number of test rows both models scored.
        challenger: Metrics of the newly trained model.
        champion: Metrics of the current champion, or None when there is no champion yet.
        champion_version: Registry version of the champion that was scored, if any.
        comparison: Bootstrap interval and McNemar's test of challenger against champion (None
            without a champion, or with ``gate.significance.mode: off``).
        retention: Both models on the retention set, when ``data.retention_uri`` is set.
        no_change: Why the challenger is no change from the champion (the same weights, or the same
            prediction on every test row), or None when it differs.
    """

    labels: tuple[str, ...]
    test_rows: int
    challenger: ModelMetrics
    champion: ModelMetrics | None = None
    champion_version: str | None = None
    comparison: Comparison | None = None
    retention: RetentionResult | None = None
    no_change: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return to_jsonable(self)

    def metrics(self) -> dict[str, float]:
        """Headline numbers of both models, flat, for the step's KFP Metrics."""
        flat = {"test_rows": float(self.test_rows)}
        for role, m in (("challenger", self.challenger), ("champion", self.champion)):
            if m is not None:
                flat.update({f"{role}_{name}": value for name, value in m.headline().items()})
        if self.comparison is not None:
            flat["macro_f1_difference"] = self.comparison.bootstrap.difference
            flat["macro_f1_difference_low"] = self.comparison.bootstrap.low
            flat["macro_f1_difference_high"] = self.comparison.bootstrap.high
            flat["mcnemar_p_value"] = self.comparison.mcnemar.p_value
        if self.retention is not None:
            flat["retention_rows"] = float(self.retention.n)
            for role, m in (("challenger", self.retention.challenger), ("champion", self.retention.champion)):
                if m is not None:
                    flat[f"retention_{role}_macro_f1"] = m.macro_f1
                    flat[f"retention_{role}_accuracy"] = m.accuracy
        return flat

    def write_json(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically."""
        return write_json(self, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output."""
        champion = data.get("champion")
        version = data.get("champion_version")
        comparison = data.get("comparison")
        retention = data.get("retention")
        return cls(
            labels=tuple(str(v) for v in data["labels"]),
            test_rows=int(data["test_rows"]),
            challenger=ModelMetrics.from_dict(data["challenger"]),
            champion=ModelMetrics.from_dict(champion) if champion is not None else None,
            champion_version=str(version) if version is not None else None,
            comparison=Comparison.from_dict(comparison) if comparison is not None else None,
            retention=RetentionResult.from_dict(retention) if retention is not None else None,
            no_change=data.get("no_change"),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationResult:
        """Read ``evaluation.json`` (or the directory holding it).

        Raises:
            RefineryError: The file is missing or is not an evaluation result.
        """
        return load_result(cls.from_dict, path, default_name=EVALUATION_FILE, what="evaluation result")


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


def label_indices(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Each row's ``label`` as its index in the declared ``labels`` (rows already checked to hold them)."""
    import numpy as np

    return frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy(dtype=np.int64)


def score(
    cfg: RunConfig,
    frame: pd.DataFrame,
    probabilities: np.ndarray,
    latency: LatencySummary | None = None,
    slice_columns: Sequence[str] = (),
) -> ModelMetrics:
    """Every metric of one model on one labelled set, from its class probabilities.

    Args:
        cfg: The run configuration (``data.labels``, ``evaluation``).
        frame: The rows: ``text``, ``label`` and the ``slice_columns``.
        probabilities: ``[rows, labels]`` in the declared label order.
        latency: Per-example latency, when measured.
        slice_columns: Columns of ``frame`` to score each value of; text-length buckets are always scored.
    """

    labels = tuple(cfg.data.labels)
    k = len(labels)
    true_idx = label_indices(frame, labels)
    pred_idx = probabilities.argmax(axis=1)
    base = classification_metrics(frame["label"].tolist(), [labels[i] for i in pred_idx], labels)
    auc = ap = None
    if k == 2 and len(set(true_idx.tolist())) == 2:  # the second declared label is the positive class
        auc = roc_auc(probabilities[:, 1], true_idx == 1)
        ap = average_precision(probabilities[:, 1], true_idx == 1)
    groups: dict[str, Sequence[object]] = {column: frame[column].tolist() for column in slice_columns}
    groups[LENGTH_SLICE] = length_bucket(frame["text"].tolist(), cfg.evaluation.length_buckets)
    slices: dict[str, dict[str, SliceScore]] = {
        column: {str(value): s for value, s in slice_metrics(true_idx, pred_idx, k, values).items()}
        for column, values in groups.items()
    }
    return replace(
        base,
        log_loss=log_loss(probabilities, true_idx),
        ece=expected_calibration_error(probabilities, true_idx, bins=cfg.evaluation.calibration_bins),
        roc_auc=auc,
        average_precision=ap,
        mean_latency_ms=latency.mean_ms if latency else None,
        p95_latency_ms=latency.p95_ms if latency else None,
        slices=slices,
    )


def comparison_rows(cfg: RunConfig, frame: pd.DataFrame) -> tuple[str, np.ndarray]:
    """Which test rows the significance tests compare on (``gate.significance.on``): ``("new", mask)``
    for the held-out new labelled rows, ``("all", mask)`` for every row.

    Raises:
        DataError: ``on`` is ``new`` but the test set holds no new rows.
    """
    import numpy as np

    on = cfg.gate.significance.on
    new = (
        (frame[DOMAIN_SLICE] == NEW).to_numpy()
        if DOMAIN_SLICE in frame.columns
        else np.zeros(len(frame), bool)
    )
    if on == "new" and not new.any():
        raise DataError(
            "gate.significance.on=new, but the test set holds no new labelled rows (data.incoming_uri,"
            " data.feedback)"
        )
    if on == "new" or (on == "auto" and new.any()):
        return "new", new
    return "all", np.ones(len(frame), dtype=bool)


def compare(cfg: RunConfig, frame: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray) -> Comparison:
    """The paired bootstrap and McNemar's test of two models' probabilities on the same rows: the rows
    :func:`comparison_rows` picks."""

    on, rows = comparison_rows(cfg, frame)
    frame, challenger, champion = frame[rows], challenger[rows], champion[rows]
    labels = tuple(cfg.data.labels)
    true_idx = label_indices(frame, labels)
    ours, theirs = challenger.argmax(axis=1), champion.argmax(axis=1)
    significance = cfg.gate.significance
    return Comparison(
        on=on,
        rows=int(rows.sum()),
        bootstrap=paired_bootstrap(
            true_idx,
            ours,
            theirs,
            len(labels),
            resamples=significance.resamples,
            confidence=significance.confidence,
            seed=significance.seed,
        ),
        mcnemar=mcnemar(ours == true_idx, theirs == true_idx),
    )


def _weights_sha256(model_dir: Path) -> str | None:
    """One hash over a model folder's safetensors files (None when it has none, e.g. an adapter)."""
    from refinery.hashing import stream_sha256

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digests = []
    for path in files:
        with path.open("rb") as fh:
            digests.append(f"{path.name}:{stream_sha256(fh)}")
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def no_change(
    challenger_dir: Path,
    champion_dir: Path,
    challenger: Sequence[np.ndarray],
    champion: Sequence[np.ndarray],
    who: str,
) -> str | None:
    """Why the challenger is no change from the champion, or None when it differs.

    It is no change when its weights hash the same as the champion's, or when it predicts the
    champion's label on every row both were scored on (``challenger[i]``/``champion[i]``: the
    probabilities of one scored set each, the test set and the retention set).
    """
    ours = _weights_sha256(challenger_dir)
    if ours is not None and ours == _weights_sha256(champion_dir):
        return f"the challenger's weights hash the same as {who}'s (sha256 {ours[:12]})"
    rows = sum(len(p) for p in challenger)
    same = all(
        (a.argmax(axis=1) == b.argmax(axis=1)).all() for a, b in zip(challenger, champion, strict=True)
    )
    if same:
        return f"the challenger predicts the same label as {who} on all {rows} scored rows"
    return None


def predictions_frame(
    frame: pd.DataFrame,
    labels: Sequence[str],
    challenger: np.ndarray,
    champion: np.ndarray | None,
    cfg: RunConfig,
) -> pd.DataFrame:
    """One row per test text: text, label, slices, length bucket, each model's prediction and probabilities."""
    import pandas as pd

    out = frame.copy()
    out[LENGTH_SLICE] = length_bucket(frame["text"].tolist(), cfg.evaluation.length_buckets)
    for role, probabilities in (("challenger", challenger), ("champion", champion)):
        if probabilities is None:
            out[f"{role}_pred"] = pd.Series([None] * len(frame), dtype="string")
            out[f"{role}_proba"] = pd.Series([None] * len(frame), dtype=object)
        else:
            out[f"{role}_pred"] = pd.Series([labels[i] for i in probabilities.argmax(axis=1)], dtype="string")
            out[f"{role}_proba"] = [row.tolist() for row in probabilities.astype(float)]
    return out


def roc_points(
    labels: Sequence[str], predictions: pd.DataFrame
) -> tuple[list[float], list[float], list[float]] | None:
    """The challenger's ROC curve as (fpr, tpr, thresholds) lists for KFP's ClassificationMetrics.

    Binary tasks only (the second declared label is the positive class) and only when the test set
    holds both classes; None otherwise. The first threshold, +inf by convention, is written as 1.0
    (no probability exceeds it), since the artifact's metadata is JSON.
    """
    import numpy as np

    from refinery.evaluation.stats import roc_curve

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
    shows (:func:`refinery.evaluation.report.confusion_matrix_figure`)."""
    from refinery.evaluation.report import confusion_matrix_figure

    confusion_matrix_figure(result).savefig(path, dpi=110)
    return path


def _publish(staging: Path, out_dir: Path) -> None:
    """Move a fully written staging directory into place; ``evaluation.json`` lands last."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    # An output directory that already exists (a KFP artifact path) is filled file by file; each
    # rename is atomic and evaluation.json, the file readers look for, is renamed last.
    names = sorted(p.name for p in staging.iterdir())
    names.sort(key=lambda n: n == EVALUATION_FILE)
    for name in names:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()


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
    retention = read_retention_set(cfg) if cfg.data.retention_uri else None
    texts = test["text"].tolist()
    batch_size = cfg.training.eval_batch_size
    samples, seed = cfg.evaluation.latency_samples, cfg.gate.significance.seed

    models = {"challenger": _load(Path(challenger_dir), labels, cfg.model.max_length, "challenger", None)}
    if champion_dir is not None:
        models["champion"] = _load(
            Path(champion_dir), labels, cfg.model.max_length, "champion", champion_version
        )
    # The challenger in one pass with its sentence embeddings: the reference drift monitoring keeps.
    ours, embeddings = models["challenger"].encode(texts, batch_size=batch_size)
    probabilities = {"challenger": _in_label_order(models["challenger"], ours, labels)}
    if "champion" in models:
        probabilities["champion"] = _probabilities(models["champion"], texts, labels, batch_size)
    metrics = {
        role: score(cfg, test, probabilities[role], _latency(m, texts, samples, seed), slice_columns)
        for role, m in models.items()
    }
    kept: dict[str, ModelMetrics] = {}
    kept_probabilities: dict[str, np.ndarray] = {}
    if retention is not None:
        kept_probabilities = {
            role: _probabilities(m, retention["text"].tolist(), labels, batch_size)
            for role, m in models.items()
        }
        kept = {role: score(cfg, retention, p) for role, p in kept_probabilities.items()}
    champion_scored = "champion" in models
    comparison = None
    unchanged = None
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
        champion_version=champion_version if champion_scored else None,
        comparison=comparison,
        retention=RetentionResult(
            uri=str(cfg.data.retention_uri),
            n=len(retention),
            challenger=kept["challenger"],
            champion=kept.get("champion"),
        )
        if retention is not None
        else None,
        no_change=unchanged,
    )
    reference = fit_reference(embeddings, probabilities["challenger"], label_indices(test, labels))

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        predictions = predictions_frame(
            test, labels, probabilities["challenger"], probabilities.get("champion"), cfg
        )
        predictions.to_parquet(staging / PREDICTIONS_FILE, index=False)
        plot_confusion_matrices(result, staging / CONFUSION_MATRIX_FILE)
        reference.save(staging / MONITORING_DIR)
        result.write_json(staging / EVALUATION_FILE)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result

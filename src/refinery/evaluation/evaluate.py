"""Evaluate the challenger, and the current champion, on one held-out test set.

Both models score the same rows of ``test.parquet`` so the gate compares like with like. The step
writes ``evaluation.json`` (the typed :class:`EvaluationResult`), ``predictions.parquet`` (one row per
test text with both predictions, for error analysis) and ``confusion_matrix.png`` (challenger and
champion side by side).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.errors import DataError, RefineryError, RegistryError, TrainingError
from refinery.evaluation.metrics import ModelMetrics, classification_metrics
from refinery.results import load_result, to_jsonable, write_json

if TYPE_CHECKING:
    import pandas as pd

    from refinery.config import RunConfig

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.parquet"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"


@dataclass(frozen=True)
class EvaluationResult:
    """Challenger and champion metrics on the same test set.

    Attributes:
        labels: Declared labels, in class-index order (the confusion-matrix order).
        test_rows: Number of test rows both models scored.
        challenger: Metrics of the newly trained model.
        champion: Metrics of the current champion, or None when there is no champion yet.
        champion_version: Registry version of the champion that was scored, if any.
    """

    labels: tuple[str, ...]
    test_rows: int
    challenger: ModelMetrics
    champion: ModelMetrics | None = None
    champion_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return to_jsonable(self)

    def metrics(self) -> dict[str, float]:
        """Headline numbers of both models, flat, for the step's KFP Metrics."""
        flat = {"test_rows": float(self.test_rows)}
        for role, m in (("challenger", self.challenger), ("champion", self.champion)):
            if m is not None:
                flat[f"{role}_accuracy"] = m.accuracy
                flat[f"{role}_macro_f1"] = m.macro_f1
        return flat

    def write_json(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically."""
        return write_json(self, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output."""
        champion = data.get("champion")
        version = data.get("champion_version")
        return cls(
            labels=tuple(str(v) for v in data["labels"]),
            test_rows=int(data["test_rows"]),
            challenger=ModelMetrics.from_dict(data["challenger"]),
            champion=ModelMetrics.from_dict(champion) if champion is not None else None,
            champion_version=str(version) if version is not None else None,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationResult:
        """Read ``evaluation.json`` (or the directory holding it).

        Raises:
            RefineryError: The file is missing or is not an evaluation result.
        """
        return load_result(cls.from_dict, path, default_name=EVALUATION_FILE, what="evaluation result")


def read_test_set(data_dir: Path, labels: Sequence[str]) -> pd.DataFrame:
    """Read ``test.parquet`` from a prepared dataset directory and check its columns and labels.

    Raises:
        DataError: The file is missing, unreadable, empty, lacks ``text``/``label``, or holds an
            undeclared label.
    """
    import pandas as pd

    path = Path(data_dir) / "test.parquet"
    if not path.is_file():
        raise DataError(f"test set not found: {path} (run prepare_data first)")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"cannot read test set {path}: {exc}") from exc
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; found {list(frame.columns)}")
    if frame.empty:
        raise DataError(f"{path} has no rows; cannot evaluate on an empty test set")
    frame = pd.DataFrame({"text": frame["text"].astype(str), "label": frame["label"].astype(str)})
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise DataError(f"{path} column 'label' holds undeclared label(s) {unknown}; declared {list(labels)}")
    return frame.reset_index(drop=True)


def _predict_labels(
    model_dir: Path,
    texts: list[str],
    labels: Sequence[str],
    max_length: int,
    batch_size: int,
    role: str,
    version: str | None,
) -> list[str]:
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
    probabilities = classifier.predict_proba(texts, batch_size=batch_size)
    return [model_labels[int(i)] for i in probabilities.argmax(axis=1)]


def plot_confusion_matrices(result: EvaluationResult, path: Path) -> Path:
    """Draw the challenger's (and the champion's) confusion matrix as a PNG.

    Cells are shaded by the share of each true class (row-normalised) and annotated with the count and
    that share, so classes of different sizes read alike.
    """
    import numpy as np
    from matplotlib.figure import Figure

    panels = [("challenger", result.challenger)]
    if result.champion is not None:
        name = f"champion v{result.champion_version}" if result.champion_version else "champion"
        panels.append((name, result.champion))

    k = len(result.labels)
    side = max(3.6, 1.0 + 0.9 * k)
    # A bare Figure renders with the Agg canvas and touches no pyplot global state.
    fig = Figure(figsize=(side * len(panels) + 1.2, side + 0.9), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    image = None
    for ax, (name, metrics) in zip(axes[0], panels, strict=True):
        counts = np.asarray(metrics.confusion_matrix, dtype=float)
        rows = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                colour = "white" if shares[i, j] > 0.55 else "black"
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}\n{shares[i, j]:.0%}",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=9,
                )
        ax.set_xticks(range(k), result.labels, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), result.labels)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        ax.set_title(
            f"{name}\nmacro-F1 {metrics.macro_f1:.3f} · accuracy {metrics.accuracy:.3f}", fontsize=10
        )
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="share of the true class")
    fig.suptitle(f"Confusion matrices on the same test set (n={result.test_rows})", fontsize=11)
    fig.savefig(path, dpi=110)
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
        cfg: The run configuration (labels from ``data.labels``, ``model.max_length``,
            ``training.eval_batch_size``).
        data_dir: Prepared dataset directory holding ``test.parquet``.
        challenger_dir: The newly fine-tuned model directory.
        champion_dir: The current champion's model directory, or None for the first model.
        out_dir: Where ``evaluation.json``, ``predictions.parquet`` and ``confusion_matrix.png`` go.
        champion_version: Registry version of the champion, recorded in the result.

    Returns:
        The EvaluationResult also written to ``out_dir/evaluation.json``.

    Raises:
        DataError: The test set is missing, empty or holds undeclared labels.
        TrainingError: The challenger cannot be loaded or predicts another label set.
        RegistryError: The champion cannot be loaded or predicts another label set.
    """
    import pandas as pd

    labels = tuple(cfg.data.labels)
    test = read_test_set(Path(data_dir), labels)
    texts = test["text"].tolist()
    y_true = test["label"].tolist()
    max_length = cfg.model.max_length
    batch_size = cfg.training.eval_batch_size

    challenger_pred = _predict_labels(
        Path(challenger_dir), texts, labels, max_length, batch_size, "challenger", None
    )
    champion_pred: list[str] | None = None
    if champion_dir is not None:
        champion_pred = _predict_labels(
            Path(champion_dir), texts, labels, max_length, batch_size, "champion", champion_version
        )

    result = EvaluationResult(
        labels=labels,
        test_rows=len(test),
        challenger=classification_metrics(y_true, challenger_pred, labels),
        champion=classification_metrics(y_true, champion_pred, labels) if champion_pred is not None else None,
        champion_version=champion_version if champion_pred is not None else None,
    )

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        predictions = pd.DataFrame(
            {
                "text": texts,
                "label": y_true,
                "challenger_pred": challenger_pred,
                "champion_pred": pd.Series(
                    champion_pred if champion_pred is not None else [None] * len(texts), dtype="string"
                ),
            }
        )
        predictions.to_parquet(staging / PREDICTIONS_FILE, index=False)
        plot_confusion_matrices(result, staging / CONFUSION_MATRIX_FILE)
        result.write_json(staging / EVALUATION_FILE)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result

"""Register a trained, evaluated model with its lineage.

Each version records where it came from: the data (URI and content hash), the configuration digest,
the base model, the pipeline run, the code (git commit), and its training and test metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.data.validate import ValidationReport
from refinery.errors import DataError, RefineryError
from refinery.evaluation.evaluate import EvaluationResult
from refinery.evaluation.gate import GateDecision
from refinery.registry.card import model_card
from refinery.registry.mlflow_registry import REFERENCE_FILE, ModelVersionInfo, Registry
from refinery.registry.promotion import EVALUATED_AGAINST, GATE, NO_CHAMPION, gate_summary
from refinery.results import read_json
from refinery.version import image_tag, source_sha

if TYPE_CHECKING:
    from refinery.config import RunConfig

PREPARED_FILE = "prepared.json"
#: Version tags of the new labelled data a version learnt from: the newest service feedback id it read,
#: and the rows it read from data.incoming_uri.
FEEDBACK_THROUGH_TAG = "feedback_through"
INCOMING_ROWS_TAG = "incoming_rows"
#: Version tag naming the pipeline run that registered it; a run registers at most one version.
RUN_TAG = "pipeline_run_id"
TRAINING_FILE = "training.json"


def _metric_key(name: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and space; labels can hold anything.
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", name)


def _numbers(tree: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Numeric leaves of a JSON object (one level of nesting), as ``prefix + key`` -> value."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[_metric_key(f"{prefix}{key}")] = float(value)
        elif isinstance(value, Mapping):
            for inner, leaf in value.items():
                if isinstance(leaf, int | float) and not isinstance(leaf, bool):
                    out[_metric_key(f"{prefix}{key}_{inner}")] = float(leaf)
    return out


def lineage_tags(
    cfg: RunConfig, data_dir: Path, run_id: str, config_sha: str | None = None
) -> dict[str, str]:
    """The lineage tags of a version trained from ``data_dir`` under ``cfg`` in pipeline run ``run_id``.

    ``config_sha`` is the digest of the run's whole configuration (default: ``cfg.digest()``; a pipeline
    step, which is given only some sections, gets it from the run's first step).

    ``data_uri``/``data_sha256`` name the training file; ``validation_data_uri``/``..._sha256`` and
    ``test_data_uri``/``..._sha256`` are added when those splits were given as files.

    Raises:
        DataError: ``prepared.json`` is missing or lacks ``data_sha256``.
    """
    prepared_path = Path(data_dir) / PREPARED_FILE
    try:
        prepared = read_json(prepared_path)
    except FileNotFoundError:
        raise DataError(
            f"prepared dataset summary not found: {prepared_path} (run prepare_data first)"
        ) from None
    except ValueError as exc:
        raise DataError(f"cannot read {prepared_path}: {exc}") from None
    data_sha = prepared.get("data_sha256")
    if not data_sha:
        raise DataError(f"{prepared_path} has no 'data_sha256'; the data lineage cannot be recorded")
    tags = {
        "data_uri": cfg.data.uri,
        "data_sha256": str(data_sha),
        "config_sha": config_sha or cfg.digest(),
        "base_model": cfg.model.base,
        RUN_TAG: str(run_id),
        "git_sha": source_sha(),
    }
    # Given validation and test files are part of the lineage too.
    uris, shas = prepared.get("source_uris") or {}, prepared.get("source_sha256") or {}
    for split in ("validation", "test"):
        if shas.get(split):
            tags[f"{split}_data_uri"] = str(uris.get(split, ""))
            tags[f"{split}_data_sha256"] = str(shas[split])
    # What new labelled data the version learnt from: the monitor counts what arrived since.
    lineage = prepared.get("lineage") or []
    feedback = [entry for entry in lineage if entry.get("role") == "feedback"]
    incoming = [entry for entry in lineage if entry.get("role") == "incoming"]
    if feedback:
        tags[FEEDBACK_THROUGH_TAG] = str(int(feedback[0].get("through_id") or 0))
        tags["feedback_sha256"] = str(feedback[0]["sha256"])
    if incoming:
        tags[INCOMING_ROWS_TAG] = str(sum(int(entry["rows"]) for entry in incoming))
        tags["incoming_files"] = str(len(incoming))
    new_rows = prepared.get("new_rows") or {}
    if new_rows:
        tags["new_train_rows"] = str(int(new_rows.get("train", 0)))
        tags["new_test_rows"] = str(int(new_rows.get("test", 0)))
    return tags


def register_model(
    cfg: RunConfig,
    model_dir: Path,
    data_dir: Path,
    evaluation_dir: Path,
    run_id: str,
    validation_dir: Path | None = None,
    decision_dir: Path | None = None,
    config_sha: str | None = None,
) -> ModelVersionInfo:
    """Register ``model_dir`` as a new version (alias ``challenger``) with lineage, metrics and artifacts.

    Args:
        cfg: The run configuration (registry location, data URI, base model; its digest is recorded).
        model_dir: The fine-tuned model directory; its ``training.json`` metrics are recorded when present.
        data_dir: The prepared dataset directory (``prepared.json`` for the data hash,
            ``reference.parquet`` and ``profile.json`` uploaded as the version's ``reference/``).
        evaluation_dir: The evaluation outputs (``evaluation.json`` gives the test metrics).
        run_id: The pipeline run that produced the model.
        validation_dir: The validate step's output (``validation.json``): its verdict becomes a tag.
        decision_dir: The gate's output (``decision.json``): its verdict becomes a tag and goes in the card.
        config_sha: The digest of the run's configuration (see :func:`lineage_tags`).

    Returns:
        The new version; or, when pipeline run ``run_id`` registered one already (a retried step), that
        one: a run registers at most one version.

    Raises:
        DataError: The prepared data summary or reference profile is missing.
        RefineryError: The evaluation result cannot be read, or ``training.json`` is corrupt.
        RegistryError: The registry is unreachable or refuses the write.
    """
    model_dir, data_dir, evaluation_dir = Path(model_dir), Path(data_dir), Path(evaluation_dir)
    registry = Registry(cfg.registry)
    done = registry.find(RUN_TAG, str(run_id))
    if done is not None:
        registry.set_challenger(done.version)
        return registry.get(done.version)
    tags = lineage_tags(cfg, data_dir, run_id, config_sha)
    reference = data_dir / REFERENCE_FILE
    if not reference.is_file():
        raise DataError(f"drift reference profile not found: {reference} (run prepare_data first)")
    evaluation = EvaluationResult.from_json(evaluation_dir)
    decision = GateDecision.from_json(decision_dir) if decision_dir is not None else None
    tags["image_tag"] = image_tag()
    if validation_dir is not None:
        report = ValidationReport.read(Path(validation_dir) / "validation.json")
        tags["validation"] = f"{'passed' if report.success else 'failed'}, {len(report.warnings)} warning(s)"
    if decision is not None:
        tags[GATE] = gate_summary(decision)

    metrics: dict[str, float] = {
        f"test_{name}": value for name, value in evaluation.challenger.headline().items()
    }
    metrics["test_rows"] = float(evaluation.test_rows)
    for label, scores in evaluation.challenger.per_class.items():
        metrics[_metric_key(f"test_f1_{label}")] = float(scores["f1"])
    # The champion this version was judged against: promotion refuses when it is no longer champion.
    tags[EVALUATED_AGAINST] = NO_CHAMPION
    if evaluation.champion is not None:
        metrics["champion_test_macro_f1"] = evaluation.champion.macro_f1
        tags[EVALUATED_AGAINST] = evaluation.champion_version or "unknown"

    training_path = model_dir / TRAINING_FILE
    if training_path.is_file():
        try:
            training = read_json(training_path)
        except ValueError as exc:
            raise RefineryError(f"cannot read training result {training_path}: {exc}") from None
        metrics.update(_numbers(training, "training_"))

    tags["test_macro_f1"] = f"{evaluation.challenger.macro_f1:.6f}"
    tags["test_accuracy"] = f"{evaluation.challenger.accuracy:.6f}"
    params = {
        "base_model": cfg.model.base,
        "max_length": cfg.model.max_length,
        "labels": ",".join(cfg.data.labels),
        "epochs": cfg.training.epochs,
        "learning_rate": cfg.training.learning_rate,
        "batch_size": cfg.training.batch_size,
        "weight_decay": cfg.training.weight_decay,
        "warmup_ratio": cfg.training.warmup_ratio,
        "max_steps": cfg.training.max_steps,
        "seed": cfg.training.seed,
        **{f"gate_min_{metric}": value for metric, value in cfg.gate.min.items()},
        **{f"gate_max_{metric}": value for metric, value in cfg.gate.max.items()},
        **{f"gate_max_regression_{metric}": value for metric, value in cfg.gate.max_regression.items()},
        "gate_significance": cfg.gate.significance.mode,
    }
    card = model_card(cfg, tags, evaluation, decision, read_json(data_dir / PREPARED_FILE))
    return registry.register(model_dir, data_dir, evaluation_dir, tags, metrics, params=params, card=card)

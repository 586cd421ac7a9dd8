"""What a registered version records about where it came from: the data (URI and content hash), the
configuration digest, the base model, the pipeline run, the code (git commit), its training metrics and
settings.

The pipeline's register step composes these with the evaluation and the gate's decision in
:func:`refinery.release.register.register_model`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.errors import DataError, RefineryError
from refinery.registry.mlflow_registry import REFERENCE_FILE, ModelVersionInfo, Registry
from refinery.results import read_json
from refinery.version import source_sha

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


def metric_key(name: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and space; labels can hold anything.
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", name)


def _numbers(tree: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Numeric leaves of a JSON object (one level of nesting), as ``prefix + key`` -> value."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[metric_key(f"{prefix}{key}")] = float(value)
        elif isinstance(value, Mapping):
            for inner, leaf in value.items():
                if isinstance(leaf, int | float) and not isinstance(leaf, bool):
                    out[metric_key(f"{prefix}{key}_{inner}")] = float(leaf)
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


def registered_by_run(registry: Registry, run_id: str) -> ModelVersionInfo | None:
    """The version pipeline run ``run_id`` registered, made ``challenger`` again, or None: a run registers
    at most one version, so a retried step finds it instead of making a second one."""
    done = registry.find(RUN_TAG, str(run_id))
    if done is None:
        return None
    registry.set_challenger(done.version)
    return registry.get(done.version)


def check_reference(data_dir: Path) -> None:
    """Check that the prepared data holds the drift reference profile registered with the version.

    Raises:
        DataError: It does not.
    """
    reference = Path(data_dir) / REFERENCE_FILE
    if not reference.is_file():
        raise DataError(f"drift reference profile not found: {reference} (run prepare_data first)")


def training_metrics(model_dir: Path) -> dict[str, float]:
    """The numbers of the model folder's ``training.json`` as ``training_*`` metrics (none without one).

    Raises:
        RefineryError: ``training.json`` is corrupt.
    """
    training_path = Path(model_dir) / TRAINING_FILE
    if not training_path.is_file():
        return {}
    try:
        training = read_json(training_path)
    except ValueError as exc:
        raise RefineryError(f"cannot read training result {training_path}: {exc}") from None
    return _numbers(training, "training_")


def training_params(cfg: RunConfig) -> dict[str, Any]:
    """The run's settings a version records as its parameters: model, training and gate."""
    return {
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

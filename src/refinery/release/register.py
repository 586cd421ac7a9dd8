"""Register a trained, judged model: the pipeline's register step, between the gate and packaging.

The version gets its lineage (:mod:`refinery.registry.lineage`), its test metrics, the data contract's
and the gate's verdicts, the champion it was evaluated against (which its promotion checks,
:func:`refinery.registry.champions.evaluated_against`) and its model card (:mod:`refinery.registry.card`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from refinery.registry.champions import EVALUATED_AGAINST, GATE, NO_CHAMPION
from refinery.registry.lineage import (
    PREPARED_FILE,
    check_reference,
    lineage_tags,
    metric_key,
    registered_by_run,
    training_metrics,
    training_params,
)
from refinery.results import read_json

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.evaluation.result import EvaluationResult
    from refinery.registry.mlflow_registry import ModelVersionInfo


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
        config_sha: The digest of the run's configuration (see
            :func:`refinery.registry.lineage.lineage_tags`).

    Returns:
        The new version; or, when pipeline run ``run_id`` registered one already (a retried step), that
        one: a run registers at most one version.

    Raises:
        DataError: The prepared data summary or reference profile is missing.
        RefineryError: The evaluation result cannot be read, or ``training.json`` is corrupt.
        RegistryError: The registry is unreachable or refuses the write.
    """
    from refinery.data.validate import ValidationReport
    from refinery.evaluation.gate import GateDecision
    from refinery.evaluation.result import EvaluationResult
    from refinery.registry.card import model_card
    from refinery.registry.mlflow_registry import Registry
    from refinery.release.judge import gate_summary
    from refinery.version import image_tag

    model_dir, data_dir, evaluation_dir = Path(model_dir), Path(data_dir), Path(evaluation_dir)
    registry = Registry(cfg.registry)
    done = registered_by_run(registry, run_id)
    if done is not None:
        return done
    tags = lineage_tags(cfg, data_dir, run_id, config_sha)
    check_reference(data_dir)
    evaluation = EvaluationResult.from_json(evaluation_dir)
    decision = GateDecision.from_json(decision_dir) if decision_dir is not None else None
    tags["image_tag"] = image_tag()
    if validation_dir is not None:
        report = ValidationReport.read(Path(validation_dir) / "validation.json")
        tags["validation"] = f"{'passed' if report.success else 'failed'}, {len(report.warnings)} warning(s)"
    if decision is not None:
        tags[GATE] = gate_summary(decision)
    tags.update(_evaluation_tags(evaluation))
    metrics = {**_evaluation_metrics(evaluation), **training_metrics(model_dir)}
    card = model_card(cfg, tags, evaluation, decision, read_json(data_dir / PREPARED_FILE))
    return registry.register(
        model_dir, data_dir, evaluation_dir, tags, metrics, params=training_params(cfg), card=card
    )


def _evaluation_metrics(evaluation: EvaluationResult) -> dict[str, float]:
    """The version's test metrics (and the champion's macro-F1 it was compared with)."""
    metrics = {f"test_{name}": value for name, value in evaluation.challenger.headline().items()}
    metrics["test_rows"] = float(evaluation.test_rows)
    for label, scores in evaluation.challenger.per_class.items():
        metrics[metric_key(f"test_f1_{label}")] = float(scores["f1"])
    if evaluation.champion is not None:
        metrics["champion_test_macro_f1"] = evaluation.champion.macro_f1
    return metrics


def _evaluation_tags(evaluation: EvaluationResult) -> dict[str, str]:
    """The champion the version was judged against (promotion refuses when it is no longer champion),
    and its headline test scores."""
    against = NO_CHAMPION if evaluation.champion is None else evaluation.champion_version or "unknown"
    return {
        EVALUATED_AGAINST: against,
        "test_macro_f1": f"{evaluation.challenger.macro_f1:.6f}",
        "test_accuracy": f"{evaluation.challenger.accuracy:.6f}",
    }

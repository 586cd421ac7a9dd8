"""Judge a model: evaluate it against an environment's champion on one test set, and gate the result.

The pipeline's ``evaluate`` and ``gate`` steps (:mod:`refinery.orchestration.steps`) and ``refinery models
promote VERSION`` (:func:`refinery.release.flows.promote_manually`) judge a model the same way, here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.errors import RegistryError
from refinery.registry.champions import GATE, GATE_BY, now

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.evaluation.gate import GateDecision
    from refinery.evaluation.result import EvaluationResult
    from refinery.registry.mlflow_registry import ModelVersionInfo, Registry


def evaluate_against_champion(
    cfg: RunConfig,
    registry: Registry,
    champion: ModelVersionInfo | None,
    data_dir: Path,
    model_dir: Path,
    out_dir: Path,
) -> EvaluationResult:
    """Evaluate ``model_dir`` and, when there is one, ``champion`` (downloaded from ``registry``) on
    ``data_dir``'s test split; the outputs go to ``out_dir`` (:func:`refinery.evaluation.evaluate.evaluate`).

    Raises:
        RegistryError: The champion's model cannot be downloaded.
        EvaluationError: The evaluation failed.
    """
    from refinery.evaluation.evaluate import evaluate

    with tempfile.TemporaryDirectory(prefix="refinery-champion-") as tmp:
        champion_dir = registry.download(champion.version, "model", Path(tmp)) if champion else None
        return evaluate(
            cfg,
            Path(data_dir),
            Path(model_dir),
            champion_dir,
            Path(out_dir),
            champion_version=champion.version if champion else None,
        )


def decide(cfg: RunConfig, evaluation: EvaluationResult | Path) -> GateDecision:
    """The gate's decision on an evaluation (or on the ``evaluation.json`` in a folder or file)."""
    from refinery.evaluation.gate import decide as gate_decision
    from refinery.evaluation.result import EvaluationResult

    if not isinstance(evaluation, EvaluationResult):
        evaluation = EvaluationResult.from_json(Path(evaluation))
    return gate_decision(cfg.gate, evaluation)


def gate_summary(decision: GateDecision) -> str:
    """The ``gate`` tag of a decision: ``passed: 5 of 5 rules held`` or ``rejected: ...``."""
    held = sum(rule.passed for rule in decision.rules)
    return f"{'passed' if decision.passed else 'rejected'}: {held} of {len(decision.rules)} rules held"


def record_gate(
    registry: Registry,
    version: str,
    decision: GateDecision,
    *,
    environment: str,
    champion: ModelVersionInfo | None,
    by: str,
) -> None:
    """Record a decision made after registration as the version's ``gate`` tag, with who made it
    (``gate_by``), where, against which champion and when."""
    against = f"against version {champion.version}" if champion else "as the first model"
    registry.tag(
        version, {GATE: gate_summary(decision), GATE_BY: f"{by} in {environment} {against}, {now()}"}
    )


def registered_test_set(registry: Registry, version: str, slice_columns: tuple[str, ...], into: Path) -> Path:
    """A prepared-data folder holding the test set ``version`` was evaluated on at registration (its
    ``evaluation/predictions.parquet``): text, label and the slice columns.

    Raises:
        RegistryError: The version has no such file.
    """
    import pandas as pd

    from refinery.evaluation.evaluate import PREDICTIONS_FILE

    evaluation = registry.download(version, "evaluation", into)
    path = evaluation / PREDICTIONS_FILE
    if not path.is_file():
        raise RegistryError(
            f"version {version} of {registry.name} has no evaluation/{PREDICTIONS_FILE} to evaluate on; "
            "pass --data with a prepared dataset folder"
        )
    frame = pd.read_parquet(path)
    columns = [c for c in ("text", "label", *slice_columns) if c in frame.columns]
    data_dir = into / "test-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    frame[columns].to_parquet(data_dir / "test.parquet", index=False)
    return data_dir

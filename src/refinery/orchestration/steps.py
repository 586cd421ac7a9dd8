"""The pipeline's steps as plain functions over paths: what each KFP component body calls.

A component adapts KFP artifacts to paths and calls exactly one function here; everything a step does
is therefore testable without KFP. Each step writes its typed result as JSON into its primary output
folder, and when it fails with a :class:`RefineryError` it leaves the message in ``error.txt`` beside
its outputs so that ``refinery run`` can say which step failed and why.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from refinery.config import from_dict
from refinery.errors import RefineryError
from refinery.results import write_json

P = ParamSpec("P")
R = TypeVar("R")

ERROR_FILE = "error.txt"


# KFP's executor sets the root logger to INFO; these libraries' INFO records are internals, not progress.
_CHATTY_LOGGERS = ("great_expectations", "mlflow", "alembic", "bentoml", "evidently", "urllib3")


def _records_failure(fn: Callable[P, R]) -> Callable[P, R]:
    """On a RefineryError, write its message to ``error.txt`` in the step's output folder, then re-raise."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            return fn(*args, **kwargs)
        except RefineryError as exc:
            bound = signature.bind(*args, **kwargs)
            out = Path(bound.arguments["out_dir"])
            out.parent.mkdir(parents=True, exist_ok=True)
            (out.parent / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
            raise

    return wrapper


@_records_failure
def validate(config: str | dict[str, Any], out_dir: Path, markdown_path: Path, html_path: Path) -> Any:
    """Run the data contract; the run stops here (DataValidationError) when an ``error`` rule fails.

    The Markdown and HTML reports are copied to their artifact paths first, so the failed step shows them.
    """
    from refinery.data.validate import validate_data

    report = validate_data(from_dict(config), Path(out_dir))
    for name, path in (("markdown", markdown_path), ("html", html_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report.paths[name], path)
    report.raise_for_failure()
    return report


@_records_failure
def prepare(config: str | dict[str, Any], out_dir: Path) -> Any:
    """Clean, deduplicate and split the data; record the drift reference profile."""
    from refinery.data.prepare import prepare_data

    return prepare_data(from_dict(config), Path(out_dir))


@_records_failure
def finetune(config: str | dict[str, Any], data_dir: Path, out_dir: Path, run_key: str = "") -> Any:
    """Fine-tune the base model on the prepared data, data-parallel when ``training.processes_per_node``
    says so; ``run_key`` names its checkpoints (a retry with the same key resumes)."""
    from refinery.training.distributed import train

    return train(from_dict(config), Path(data_dir), Path(out_dir), run_key or None)


@_records_failure
def evaluate(
    config: str | dict[str, Any],
    data_dir: Path,
    model_dir: Path,
    out_dir: Path,
    predictions_path: Path | None = None,
    report_path: Path | None = None,
) -> Any:
    """Evaluate the challenger and, when one exists, the current champion on the same test set.

    Besides ``out_dir`` (evaluation.json, predictions.parquet, confusion_matrix.png), the predictions
    go to ``predictions_path`` (a KFP Dataset) and the HTML report to ``report_path`` when given.
    """
    import pandas as pd

    from refinery.evaluation.evaluate import PREDICTIONS_FILE
    from refinery.evaluation.evaluate import evaluate as run_evaluate
    from refinery.evaluation.report import render_html
    from refinery.registry.mlflow_registry import Registry

    cfg = from_dict(config)
    registry = Registry(cfg.registry)
    champion = registry.champion()
    with tempfile.TemporaryDirectory(prefix="refinery-champion-") as tmp:
        champion_dir = registry.download(champion.version, "model", Path(tmp)) if champion else None
        result = run_evaluate(
            cfg,
            Path(data_dir),
            Path(model_dir),
            champion_dir,
            Path(out_dir),
            champion_version=champion.version if champion else None,
        )
    predictions = Path(out_dir) / PREDICTIONS_FILE
    if predictions_path is not None:
        Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(predictions, predictions_path)
    if report_path is not None:
        page = render_html(
            result, pd.read_parquet(predictions), calibration_bins=cfg.evaluation.calibration_bins
        )
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(page, encoding="utf-8")
    return result


@_records_failure
def gate(config: str | dict[str, Any], evaluation_dir: Path, out_dir: Path, report_path: Path) -> Any:
    """Decide whether the challenger may be promoted; writes decision.json and the Markdown report."""
    from refinery.evaluation.evaluate import EvaluationResult
    from refinery.evaluation.gate import decide

    evaluation = EvaluationResult.from_json(Path(evaluation_dir) / "evaluation.json")
    decision = decide(from_dict(config).gate, evaluation)
    write_json(decision, Path(out_dir) / "decision.json")
    Path(report_path).write_text(decision.to_markdown(), encoding="utf-8")
    return decision


@_records_failure
def register(
    config: str | dict[str, Any],
    model_dir: Path,
    data_dir: Path,
    evaluation_dir: Path,
    run_id: str,
    out_dir: Path,
    validation_dir: Path | None = None,
    decision_dir: Path | None = None,
) -> Any:
    """Register the challenger with its lineage and model card; it gets the ``challenger`` alias."""
    from refinery.registry.register import register_model

    version = register_model(
        from_dict(config),
        Path(model_dir),
        Path(data_dir),
        Path(evaluation_dir),
        run_id,
        validation_dir=Path(validation_dir) if validation_dir is not None else None,
        decision_dir=Path(decision_dir) if decision_dir is not None else None,
    )
    write_json(version, Path(out_dir) / "registration.json")
    return version


@_records_failure
def package(config: str | dict[str, Any], version: str, out_dir: Path) -> Any:
    """Build a Bento from the registered version's model, as the registry holds it."""
    from refinery.packaging.bento import package as build_bento
    from refinery.registry.mlflow_registry import Registry

    cfg = from_dict(config)
    with tempfile.TemporaryDirectory(prefix="refinery-package-") as tmp:
        model_dir = Registry(cfg.registry).download(version, "model", Path(tmp))
        result = build_bento(cfg, model_dir, version)
    write_json(result, Path(out_dir) / "package.json")
    return result


@_records_failure
def promote(config: str | dict[str, Any], version: str, bento_tag: str, out_dir: Path) -> Any:
    """Make the registered, packaged version the champion: a GitOps commit to the configured
    environment's overlay, then the ``champion`` alias, last - refused when another promotion replaced
    the champion this version was judged against (see :mod:`refinery.registry.promotion`)."""
    from refinery.registry.mlflow_registry import Registry
    from refinery.registry.promotion import evaluated_against, promote_version

    cfg = from_dict(config)
    registry = Registry(cfg.registry)
    info = registry.get(version)
    record = promote_version(
        cfg,
        version,
        bento_tag,
        expected_champion=evaluated_against(info),
        reason=f"gate {info.tags.get('gate', 'passed')}",
        registry=registry,
    )
    write_json(record, Path(out_dir) / "promotion.json")
    return record


@_records_failure
def suggest_trials(
    config: str | dict[str, Any], round_index: int, history: list[dict[str, Any]], out_dir: Path
) -> list[dict[str, Any]]:
    """The trials of search round ``round_index``: ``{"number", "params"}`` each, also written as trials.json."""
    from refinery.training.hpo import TrialRecord, suggest

    hpo = from_dict(config).hpo
    done = [TrialRecord.from_dict(t) for t in history]
    params = suggest(hpo, done, hpo.rounds()[round_index])
    trials = [{"number": len(done) + i, "params": p} for i, p in enumerate(params)]
    write_json(trials, Path(out_dir) / "trials.json")
    return trials


@_records_failure
def finetune_trial(
    config: str | dict[str, Any], data_dir: Path, trial: dict[str, Any], out_dir: Path, run_key: str = ""
) -> dict[str, Any]:
    """Fine-tune with one trial's settings; a trial that fails to train is recorded, not fatal to the
    search, but a preempted one fails the task so that its retry resumes it."""
    from refinery.errors import TrainingError, TrainingPreempted
    from refinery.training.distributed import train
    from refinery.training.hpo import TrialRecord, record, trial_config

    cfg = from_dict(config)
    number, params = int(trial["number"]), dict(trial["params"])
    print(f"search trial {number}: {params}", flush=True)
    try:
        key = f"{run_key}-trial-{number}" if run_key else None
        result = train(trial_config(cfg, params), Path(data_dir), Path(out_dir), key)
    except TrainingPreempted:
        raise
    except (TrainingError, MemoryError) as exc:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return TrialRecord(number, params, None, error=f"{type(exc).__name__}: {exc}").to_dict()
    return record(number, params, result, cfg.hpo.metric).to_dict()


@_records_failure
def merge_round(
    config: str | dict[str, Any],
    history: list[dict[str, Any]],
    results: list[dict[str, Any]],
    model_dirs: list[Path],
    incumbent_dir: Path | None,
    out_dir: Path,
    table_path: Path,
) -> list[dict[str, Any]]:
    """Add a round's trials to the history and keep the best model so far in ``out_dir``.

    ``results[i]`` was trained into ``model_dirs[i]``; ``incumbent_dir`` holds the best model of the
    earlier rounds (none before the first). The model folder also gets ``search.json``: every trial and
    the winner, kept with the model when it is registered.
    """
    from refinery.training.hpo import TrialRecord, best_trial, trials_table

    metric = from_dict(config).hpo.metric
    earlier = [TrialRecord.from_dict(t) for t in history]
    new = [TrialRecord.from_dict(t) for t in results]
    everything = sorted(earlier + new, key=lambda t: t.number)
    winner = best_trial(everything, metric)
    by_number = {t.number: Path(d) for t, d in zip(new, model_dirs, strict=True)}
    source = by_number.get(winner.number) or incumbent_dir
    if source is None:
        raise RefineryError(f"search: the best trial {winner.number} has no model to carry on")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("search.json"))
    write_json(
        {"metric": metric, "best_trial": winner.number, "trials": [t.to_dict() for t in everything]},
        out / "search.json",
    )
    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    Path(table_path).write_text(trials_table(everything, metric), encoding="utf-8")
    return [t.to_dict() for t in everything]

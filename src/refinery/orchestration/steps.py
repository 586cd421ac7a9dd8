"""The pipeline's steps as plain functions over paths: what each KFP component body calls.

A component adapts KFP artifacts to paths, its configuration sections to a :class:`RunConfig`
(:func:`refinery.config.step_config`) and calls exactly one function here; everything a step does is
therefore testable without KFP. Each step writes its typed result as JSON into its primary output
folder, and when it fails with a :class:`RefineryError` it leaves the message in ``error.txt`` beside
its outputs so that ``refinery run`` can say which step failed and why.

The steps share nothing but their arguments and artifacts, and the network services the configuration
names (the cluster contract, ARCHITECTURE.md): no step reads what another left anywhere else.

From ``evaluate`` to ``promote`` a step adapts its paths and outputs to the release flow in
:mod:`refinery.release`, which the ``refinery models`` commands call too: the flow is composed there, once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from refinery.atomic import staged_dir
from refinery.config import RunConfig
from refinery.errors import RefineryError
from refinery.results import Record, write_json

P = ParamSpec("P")
R = TypeVar("R")

ERROR_FILE = "error.txt"


# KFP's executor sets the root logger to INFO; these libraries' INFO records are internals, not progress.
_CHATTY_LOGGERS = ("great_expectations", "mlflow", "alembic", "bentoml", "evidently", "urllib3")


def _records_failure(fn: Callable[P, R]) -> Callable[P, R]:
    """On a RefineryError, write its message to ``error.txt`` beside the step's output folder, then re-raise;
    a new attempt removes an earlier attempt's."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        error_file = Path(signature.bind(*args, **kwargs).arguments["out_dir"]).parent / ERROR_FILE
        # A retried step starts afresh: an earlier attempt's error is no longer the step's outcome.
        error_file.unlink(missing_ok=True)
        try:
            return fn(*args, **kwargs)
        except RefineryError as exc:
            error_file.parent.mkdir(parents=True, exist_ok=True)
            error_file.write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
            raise

    return wrapper


@dataclass(frozen=True)
class ResolvedRun(Record):
    """What the first step of a run hands on: the resolved configuration, its digest, the data's
    fingerprint and the newest service feedback id the run reads (written as resolved.json; the sections
    become the other steps' inputs)."""

    sections: dict[str, dict[str, Any]]
    config_sha: str
    data_fingerprint: str
    feedback_through: int = 0


def _data_fingerprint(cfg: RunConfig, feedback_through: int) -> str:
    from refinery.data.load import fingerprint
    from refinery.data.sources import source_lines

    return fingerprint(cfg.data, source_lines(cfg, feedback_through))


def _check_data(cfg: RunConfig, data_fingerprint: str, feedback_through: int) -> None:
    """Stop when the run's data is no longer what the run started with (the fingerprint differs)."""
    from refinery.data.load import check_fingerprint
    from refinery.data.sources import source_lines

    if data_fingerprint:
        check_fingerprint(cfg.data, data_fingerprint, source_lines(cfg, feedback_through))


@_records_failure
def resolve_config(config: str, parameters: dict[str, Any], out_dir: Path) -> ResolvedRun:
    """Read the run's configuration (YAML text or a URI), apply the typed run parameters, resolve it
    where the steps run, pin the service feedback it reads, and fingerprint the data it names."""
    from refinery.config import config_for_run
    from refinery.data.sources import feedback_watermark

    cfg = config_for_run(config, parameters)
    through = feedback_watermark(cfg)
    resolved = ResolvedRun(cfg.sections(), cfg.digest(), _data_fingerprint(cfg, through), through)
    resolved.write_json(Path(out_dir) / "resolved.json")
    return resolved


@_records_failure
def validate(
    cfg: RunConfig,
    out_dir: Path,
    markdown_path: Path,
    html_path: Path,
    data_fingerprint: str = "",
    feedback_through: int = 0,
) -> Any:
    """Run the data contract; the run stops here (DataValidationError) when an ``error`` rule fails.

    With ``data_fingerprint`` (the run's), it first checks that the data is still what the run started
    with. The Markdown and HTML reports are copied to their artifact paths first, so the failed step
    shows them.
    """
    from refinery.data.validate import validate_data

    _check_data(cfg, data_fingerprint, feedback_through)
    report = validate_data(cfg, Path(out_dir), feedback_through=feedback_through)
    for name, path in (("markdown", markdown_path), ("html", html_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report.paths[name], path)
    report.raise_for_failure()
    return report


@_records_failure
def prepare(cfg: RunConfig, out_dir: Path, data_fingerprint: str = "", feedback_through: int = 0) -> Any:
    """Assemble (base data, new labelled rows, replay), clean, deduplicate and split the data; record the
    drift reference profile. With ``data_fingerprint``, it first checks that the data is still what the
    run started with."""
    from refinery.data.prepare import prepare_data

    _check_data(cfg, data_fingerprint, feedback_through)
    return prepare_data(cfg, Path(out_dir), feedback_through=feedback_through)


@_records_failure
def finetune(cfg: RunConfig, data_dir: Path, out_dir: Path, run_key: str = "") -> Any:
    """Fine-tune the base model on the prepared data, data-parallel when ``training.processes_per_node``
    says so; ``run_key`` names its checkpoints (a retry with the same key resumes)."""
    from refinery.training.distributed import train

    return train(cfg, Path(data_dir), Path(out_dir), run_key or None)


@_records_failure
def evaluate(
    cfg: RunConfig,
    data_dir: Path,
    model_dir: Path,
    out_dir: Path,
    predictions_path: Path | None = None,
    report_path: Path | None = None,
    environment: str | None = None,
) -> Any:
    """Evaluate the challenger and, when one exists, the current champion on the same test set.

    The champion is the run's environment's (``environment``, the run's ``gitops.environment``, which
    the component is given alone; default ``cfg.gitops.environment``), the one its promote step replaces.
    Besides ``out_dir`` (evaluation.json, predictions.parquet, confusion_matrix.png), the predictions
    go to ``predictions_path`` (a KFP Dataset) and the HTML report to ``report_path`` when given.
    """
    import pandas as pd

    from refinery.evaluation.evaluate import PREDICTIONS_FILE
    from refinery.evaluation.report import render_html
    from refinery.registry.mlflow_registry import Registry
    from refinery.release.judge import evaluate_against_champion

    registry = Registry(cfg.registry)
    # The run's own environment, so an older registry's plain champion alias stands for it (as in promote).
    champion = registry.champion(environment or cfg.gitops.environment, legacy=True)
    result = evaluate_against_champion(
        cfg, registry, champion, Path(data_dir), Path(model_dir), Path(out_dir)
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
def gate(cfg: RunConfig, evaluation_dir: Path, out_dir: Path, report_path: Path) -> Any:
    """Decide whether the challenger may be promoted; writes decision.json and the Markdown report."""
    from refinery.release.judge import decide

    decision = decide(cfg, Path(evaluation_dir) / "evaluation.json")
    write_json(decision, Path(out_dir) / "decision.json")
    Path(report_path).write_text(decision.to_markdown(), encoding="utf-8")
    return decision


@_records_failure
def register(
    cfg: RunConfig,
    model_dir: Path,
    data_dir: Path,
    evaluation_dir: Path,
    run_id: str,
    out_dir: Path,
    validation_dir: Path | None = None,
    decision_dir: Path | None = None,
    config_sha: str | None = None,
) -> Any:
    """Register the challenger with its lineage and model card; it gets the ``challenger`` alias. A
    retried step finds the version its run registered and registers no second one."""
    from refinery.release.register import register_model

    version = register_model(
        cfg,
        Path(model_dir),
        Path(data_dir),
        Path(evaluation_dir),
        run_id,
        validation_dir=Path(validation_dir) if validation_dir is not None else None,
        decision_dir=Path(decision_dir) if decision_dir is not None else None,
        config_sha=config_sha,
    )
    write_json(version, Path(out_dir) / "registration.json")
    return version


@_records_failure
def package(cfg: RunConfig, version: str, out_dir: Path, data_dir: Path | None = None) -> Any:
    """Build the registered version's Bento from its model as the registry holds it, publish it to the
    Bento store and tag the version with it (a version packaged before keeps its Bento). ``data_dir``'s
    test split checks an int8 ONNX export against fp32 when ``packaging.runtime`` asks for it."""
    from refinery.registry.mlflow_registry import Registry
    from refinery.release.package import package_registered

    data = Path(data_dir) if data_dir is not None else None
    result = package_registered(cfg, Registry(cfg.registry), version, data_dir=data)
    write_json(result, Path(out_dir) / "package.json")
    return result


@_records_failure
def check_serving(cfg: RunConfig, bento: Any, data_dir: Path, out_dir: Path, report_path: Path) -> Any:
    """Serve the packaged Bento as production does and load it with the test split's texts; the gate's
    serving rules decide whether it may be promoted (see :mod:`refinery.packaging.check`). Writes
    serving_check.json and the server's log to ``out_dir``, the Markdown verdict to ``report_path``
    (:func:`refinery.release.package.check_serving`)."""
    from refinery.packaging.check import ServingCheckResult
    from refinery.release.package import check_serving as run_check

    result = run_check(cfg, bento, Path(data_dir), Path(out_dir))
    if result is None:
        skipped = ServingCheckResult(bento.bento_tag, started=False)
        Path(report_path).write_text("# Serving check\n\nSkipped: gate.serving_check.enabled is false.\n")
        write_json(
            {**skipped.to_dict(), "passed": True, "skipped": True}, Path(out_dir) / "serving_check.json"
        )
        return True
    Path(report_path).write_text(result.to_markdown(), encoding="utf-8")
    return result.passed


@_records_failure
def promote(cfg: RunConfig, version: str, bento: Any, image: str, out_dir: Path) -> Any:
    """Make the registered version the configured environment's champion, served from ``bento`` (a
    :class:`~refinery.packaging.bento.PackageResult` in the Bento store) by ``image``: a GitOps commit to
    the environment's overlay (the image pinned by digest), then the ``champion-<environment>`` alias,
    last - refused when another promotion replaced the champion this version was judged against. In a
    protected environment the commit goes to a review branch and the alias waits for the merge (see
    :mod:`refinery.release.promote`)."""
    from refinery.release.flows import promote_challenger

    record = promote_challenger(cfg, version, bento, image)
    write_json(record, Path(out_dir) / "promotion.json")
    return record


@_records_failure
def suggest_trials(
    cfg: RunConfig, round_index: int, history: list[dict[str, Any]], out_dir: Path
) -> list[dict[str, Any]]:
    """The trials of search round ``round_index``: ``{"number", "params"}`` each, also written as trials.json."""
    from refinery.training.hpo import TrialRecord, suggest

    hpo = cfg.hpo
    done = [TrialRecord.from_dict(t) for t in history]
    params = suggest(hpo, done, hpo.rounds()[round_index])
    trials = [{"number": len(done) + i, "params": p} for i, p in enumerate(params)]
    write_json(trials, Path(out_dir) / "trials.json")
    return trials


@_records_failure
def finetune_trial(
    cfg: RunConfig, data_dir: Path, trial: dict[str, Any], out_dir: Path, run_key: str = ""
) -> dict[str, Any]:
    """Fine-tune with one trial's settings; a trial that fails to train is recorded, not fatal to the
    search, but a preempted one fails the task so that its retry resumes it."""
    from refinery.errors import TrainingError, TrainingPreempted
    from refinery.training.distributed import train
    from refinery.training.hpo import TrialRecord, record, trial_config

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
    cfg: RunConfig,
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

    metric = cfg.hpo.metric
    earlier = [TrialRecord.from_dict(t) for t in history]
    new = [TrialRecord.from_dict(t) for t in results]
    everything = sorted(earlier + new, key=lambda t: t.number)
    winner = best_trial(everything, metric)
    by_number = {t.number: Path(d) for t, d in zip(new, model_dirs, strict=True)}
    source = by_number.get(winner.number) or incumbent_dir
    if source is None:
        raise RefineryError(f"search: the best trial {winner.number} has no model to carry on")
    with staged_dir(Path(out_dir)) as out:
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("search.json"), dirs_exist_ok=True)
        write_json(
            {"metric": metric, "best_trial": winner.number, "trials": [t.to_dict() for t in everything]},
            out / "search.json",
        )
    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    Path(table_path).write_text(trials_table(everything, metric), encoding="utf-8")
    return [t.to_dict() for t in everything]


#: The monitoring pipeline's outputs: the decision (also in the trigger log) and, when the window was
#: tested, the drift report; a window too small to test gets a page saying so.
_UNTESTED_REPORT = (
    "<!doctype html><html><head><meta charset='utf-8'><title>No drift report</title></head>"
    "<body><h1>No drift report</h1><p>{reason}</p></body></html>\n"
)


@_records_failure
def monitor(config: str, out_dir: Path, decision_md: Path, report_html: Path) -> Any:
    """The monitoring pipeline's step: sync the champion aliases with the merged overlays, check the
    serving model's window for drift against the inference log and, when the trigger policy fires, start
    a training run (through the Kubeflow Pipelines API for
    a cluster configuration). ``config`` is the whole configuration as one parameter
    (:func:`refinery.config.config_as_written`, or a YAML file's URI): the training run is compiled from
    it as ``refinery submit`` compiles it, so it lands on the same pipeline version."""
    import html

    from refinery.config import config_from_parameter, resolve
    from refinery.orchestration.retrain import monitor_round

    written = config_from_parameter(config)
    done = monitor_round(resolve(written), written, show=logging.getLogger(__name__).info)
    decision = done.decision
    decision.write_json(Path(out_dir) / "decision.json")
    Path(decision_md).parent.mkdir(parents=True, exist_ok=True)
    aliases = "".join(f"\n- {line}" for line in done.alias_lines())
    Path(decision_md).write_text(decision.to_markdown() + aliases, encoding="utf-8")
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    if decision.drift is not None:
        shutil.copyfile(decision.drift.report, report_html)
    else:
        Path(report_html).write_text(
            _UNTESTED_REPORT.format(reason=html.escape(decision.reason)), encoding="utf-8"
        )
    return decision

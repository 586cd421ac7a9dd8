"""Runs of refinery's pipelines through the Kubeflow Pipelines API (v2beta1), with the kfp SDK's client.

:func:`connect` reaches the API the configuration's ``kfp`` section names (the environment wins) with the
credentials the environment holds (:mod:`refinery.orchestration.kfp_connection`, re-exported here);
:func:`ensure_pipeline_version` uploads a compiled pipeline as a version named after this refinery and a
hash of the IR, or finds the one uploaded before; :func:`submit_training` compiles the training pipeline
exactly as ``refinery compile`` does and starts a run of that version with the run form's typed
parameters; :func:`wait_for_run` follows a run to its end and names the step that failed.
``refinery schedules`` (refinery.orchestration.schedules) builds on the same functions.

Where the host, the run links, the credentials and the namespace come from is said in
:mod:`refinery.orchestration.kfp_connection`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.config import RunConfig
from refinery.errors import ConfigError, KfpApiError, PipelineError
from refinery.orchestration.kfp_connection import (
    CALL_TIMEOUT,
    HOST_ENV,
    KFP_HOST_ENV,
    PAGE_SIZE,
    SA_TOKEN_ENV,
    SA_TOKEN_PATH,
    TOKEN_ENV,
    UI_ENV,
    Endpoint,
    calling,
    conflict,
    connect,
    endpoint,
    name_filter,
    namespace_arg,
    pages,
)

if TYPE_CHECKING:
    from refinery.orchestration.compiling import CompiledPipeline

__all__ = [
    "CALL_TIMEOUT",
    "FAILED_STATES",
    "FINAL_STATES",
    "HOST_ENV",
    "KFP_HOST_ENV",
    "POLL_SECONDS",
    "SA_TOKEN_ENV",
    "SA_TOKEN_PATH",
    "TOKEN_ENV",
    "UI_ENV",
    "Endpoint",
    "PipelineVersion",
    "RunOutcome",
    "SubmittedRun",
    "calling",
    "connect",
    "endpoint",
    "ensure_experiment",
    "ensure_pipeline_version",
    "failed_steps",
    "find_experiment",
    "find_pipeline",
    "find_pipeline_version",
    "find_version",
    "name_filter",
    "pages",
    "run_parameters",
    "submit_pipeline",
    "submit_training",
    "wait_for_run",
]

#: Seconds between two looks at a running run.
POLL_SECONDS = 5.0
FINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
FAILED_STATES = frozenset({"FAILED", "CANCELED"})

# ---- pipelines and versions -------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineVersion:
    """A pipeline version on the server, and whether this call uploaded it."""

    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    uploaded: bool = False


def _find_by_name(
    client: Any, what: str, name: str, list_call: Callable[..., Any], items: str, id_field: str, **args: Any
) -> str | None:
    """The ``id_field`` of the first ``items`` that ``list_call`` (a paged v2beta1 list call, given
    ``args``) returns under the display name ``name``, or None."""
    with calling(client, f"looking up {what} {name}"):
        for item in pages(
            lambda token: list_call(
                _request_timeout=CALL_TIMEOUT,
                page_token=token,
                page_size=PAGE_SIZE,
                filter=name_filter(name),
                **args,
            ),
            items,
        ):
            if name in (item.display_name, getattr(item, "name", None)):
                return str(getattr(item, id_field))
    return None


def find_pipeline(client: Any, name: str, namespace: str | None = None) -> str | None:
    """The id of the pipeline called ``name`` (in ``namespace``), or None."""
    list_call = client.pipelines.pipeline_service_list_pipelines
    return _find_by_name(
        client, "pipeline", name, list_call, "pipelines", "pipeline_id", **namespace_arg(namespace)
    )


def find_version(client: Any, pipeline_id: str, name: str) -> str | None:
    """The id of the version called ``name`` of the pipeline, or None."""
    list_call = client.pipelines.pipeline_service_list_pipeline_versions
    return _find_by_name(
        client,
        "pipeline version",
        name,
        list_call,
        "pipeline_versions",
        "pipeline_version_id",
        pipeline_id=pipeline_id,
    )


def find_pipeline_version(
    client: Any, compiled: CompiledPipeline, namespace: str | None = None
) -> PipelineVersion | None:
    """The version ``compiled`` would be uploaded as, if it is on the server already (nothing changes)."""
    pipeline_id = find_pipeline(client, compiled.name, namespace)
    if pipeline_id is None:
        return None
    version_id = find_version(client, pipeline_id, compiled.version_name)
    if version_id is None:
        return None
    return PipelineVersion(pipeline_id, compiled.name, version_id, compiled.version_name)


def _create_or_find(client: Any, what: str, create: Callable[[], str], find: Callable[[], str | None]) -> str:
    """``create()`` (a create call, named ``what`` in errors); when the server refuses because the thing
    exists (another refinery created it since we looked), ``find()`` instead."""
    try:
        with calling(client, what):
            return create()
    except KfpApiError as exc:
        found = find() if conflict(exc) else None
        if found is None:
            raise
        return found


def _create_pipeline(client: Any, compiled: CompiledPipeline, namespace: str | None) -> str:
    import kfp_server_api

    body = kfp_server_api.V2beta1Pipeline(
        display_name=compiled.name,
        name=compiled.name,
        description=f"refinery's {compiled.pipeline} pipeline; versions are uploaded by refinery.",
        namespace=namespace,
    )
    return _create_or_find(
        client,
        f"creating pipeline {compiled.name}",
        lambda: str(
            client.pipelines.pipeline_service_create_pipeline(
                _request_timeout=CALL_TIMEOUT, pipeline=body
            ).pipeline_id
        ),
        lambda: find_pipeline(client, compiled.name, namespace),
    )


def _upload_version(client: Any, compiled: CompiledPipeline, pipeline_id: str) -> str:
    name = compiled.version_name
    with tempfile.TemporaryDirectory(prefix="refinery-upload-") as folder:
        path = Path(folder) / f"{compiled.name}.yaml"
        path.write_text(compiled.text, encoding="utf-8")
        return _create_or_find(
            client,
            f"uploading pipeline version {name} of {compiled.name}",
            lambda: str(
                client.pipeline_uploads.upload_pipeline_version(
                    str(path),
                    _request_timeout=CALL_TIMEOUT,
                    name=name,
                    display_name=name,
                    pipelineid=pipeline_id,
                    description=f"Compiled by refinery {name.rsplit('-', 1)[0]}; IR sha256 {compiled.digest}...",
                ).pipeline_version_id
            ),
            lambda: find_version(client, pipeline_id, name),
        )


def ensure_pipeline_version(
    client: Any, compiled: CompiledPipeline, namespace: str | None = None
) -> PipelineVersion:
    """The server's version of ``compiled``: found by its name, else uploaded (the pipeline is created
    on first use). Its name holds a hash of the IR, so a version of that name is this IR.

    Raises:
        KfpApiError: The server refused or failed a call.
    """
    pipeline_id = find_pipeline(client, compiled.name, namespace)
    if pipeline_id is None:
        pipeline_id = _create_pipeline(client, compiled, namespace)
    version_id = find_version(client, pipeline_id, compiled.version_name)
    if version_id is not None:
        return PipelineVersion(pipeline_id, compiled.name, version_id, compiled.version_name)
    version_id = _upload_version(client, compiled, pipeline_id)
    return PipelineVersion(pipeline_id, compiled.name, version_id, compiled.version_name, uploaded=True)


# ---- experiments ------------------------------------------------------------------------------------


def find_experiment(client: Any, name: str, namespace: str | None = None) -> str | None:
    """The id of the experiment called ``name`` (in ``namespace``), or None."""
    list_call = client.experiments.experiment_service_list_experiments
    return _find_by_name(
        client, "experiment", name, list_call, "experiments", "experiment_id", **namespace_arg(namespace)
    )


def ensure_experiment(client: Any, name: str, namespace: str | None = None) -> str:
    """The id of the experiment called ``name``, created when missing."""
    import kfp_server_api

    found = find_experiment(client, name, namespace)
    if found is not None:
        return found
    body = kfp_server_api.V2beta1Experiment(
        display_name=name, description="Runs started by refinery.", namespace=namespace
    )
    return _create_or_find(
        client,
        f"creating experiment {name}",
        lambda: str(
            client.experiments.experiment_service_create_experiment(
                _request_timeout=CALL_TIMEOUT, experiment=body
            ).experiment_id
        ),
        lambda: find_experiment(client, name, namespace),
    )


# ---- parameters -------------------------------------------------------------------------------------


_KINDS = {
    "NUMBER_DOUBLE": "number",
    "NUMBER_INTEGER": "whole number",
    "STRING": "string",
    "BOOLEAN": "boolean (true or false)",
    "LIST": "list",
    "STRUCT": "mapping",
}


def _typed(value: Any, kind: str, where: str) -> Any:
    numbers = (int, float)
    if kind == "NUMBER_DOUBLE" and isinstance(value, numbers) and not isinstance(value, bool):
        return float(value)
    if kind == "NUMBER_INTEGER" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "STRING" and isinstance(value, str):
        return value
    if kind == "BOOLEAN" and isinstance(value, bool):
        return value
    if kind == "LIST" and isinstance(value, list):
        return value
    if kind == "STRUCT" and isinstance(value, dict):
        return value
    raise ConfigError(f"{where}: {value!r} is not a {_KINDS.get(kind, kind.lower())}")


def run_parameters(
    compiled: CompiledPipeline, overrides: Mapping[str, Any] | None = None, source: str = "parameters"
) -> dict[str, Any]:
    """The run's parameters: every parameter of the run form with the configuration's value, ``overrides``
    on top, each checked against the parameter's type.

    Raises:
        ConfigError: An override names no parameter of the pipeline or has the wrong type.
    """
    types = compiled.parameter_types()
    values = dict(compiled.defaults())
    for name, value in (overrides or {}).items():
        if name not in types:
            raise ConfigError(
                f"{source}.{name}: the {compiled.pipeline} pipeline has no such parameter; it takes"
                f" {', '.join(sorted(types))}"
            )
        values[name] = _typed(value, types[name], f"{source}.{name}")
    return values


# ---- runs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedRun:
    """A run started in Kubeflow Pipelines.

    Attributes:
        run_id: The run's id.
        run_name: Its display name.
        url: Its page in the Kubeflow Pipelines UI.
        pipeline_id, pipeline_name: The pipeline it is a run of (``refinery-training``).
        version_id, version_name: The pipeline version (``<version>-<sha12>-<hash12>``).
        version_uploaded: Whether this submission uploaded the version (else it was there).
        experiment, experiment_id: The experiment it runs in.
        parameters: The parameters it was started with.
    """

    run_id: str
    run_name: str
    url: str
    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    version_uploaded: bool
    experiment: str
    experiment_id: str
    parameters: Mapping[str, Any]


def submit_pipeline(
    cfg: RunConfig,
    pipeline: str = "training",
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    client: Any = None,
    source: str = "the configuration",
) -> SubmittedRun:
    """Compile ``pipeline`` from ``cfg`` as ``refinery compile`` does, upload it as a version (or find
    the one uploaded before) and start a run of it.

    Args:
        cfg: A cluster configuration as written (``read_config``, not resolved).
        pipeline: A name in :data:`refinery.orchestration.compiling.PIPELINES`.
        experiment: The experiment (default: ``kfp.experiment``); created when missing.
        run_name: The run's display name (default: ``<pipeline>-<UTC time>``).
        parameters: Run parameters to override (default: the configuration's values, all passed).
        client: A client from :func:`connect` (default: one for ``cfg``).
        source: What errors call the configuration (its file name).

    Raises:
        ConfigError: The configuration cannot be compiled for a cluster, or a parameter is wrong.
        KfpApiError: The API is not configured, unreachable, or refused a call.
    """
    import kfp_server_api

    from refinery.orchestration.compiling import compile_pipeline, require_cluster

    require_cluster(cfg, source)
    ep = endpoint(cfg)
    compiled = compile_pipeline(cfg, pipeline, source=source)
    values = run_parameters(compiled, parameters)
    client = client if client is not None else connect(ep)
    version = ensure_pipeline_version(client, compiled, ep.namespace)
    experiment = experiment or ep.experiment
    experiment_id = ensure_experiment(client, experiment, ep.namespace)
    run_name = run_name or f"{compiled.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    body = kfp_server_api.V2beta1Run(
        display_name=run_name,
        description=f"Started by refinery from {source}.",
        experiment_id=experiment_id,
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=version.pipeline_id, pipeline_version_id=version.version_id
        ),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=values),
        service_account=ep.service_account,
    )
    with calling(client, f"creating run {run_name}"):
        run = client.runs.run_service_create_run(_request_timeout=CALL_TIMEOUT, run=body)
    return SubmittedRun(
        run_id=str(run.run_id),
        run_name=run_name,
        url=ep.run_url(str(run.run_id)),
        pipeline_id=version.pipeline_id,
        pipeline_name=version.pipeline_name,
        version_id=version.version_id,
        version_name=version.version_name,
        version_uploaded=version.uploaded,
        experiment=experiment,
        experiment_id=experiment_id,
        parameters=values,
    )


def submit_training(
    cfg: RunConfig,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    client: Any = None,
    source: str = "the configuration",
) -> SubmittedRun:
    """Start a run of the training pipeline compiled from ``cfg`` (see :func:`submit_pipeline`); it
    returns once the run is created."""
    return submit_pipeline(
        cfg,
        "training",
        experiment=experiment,
        run_name=run_name,
        parameters=parameters,
        client=client,
        source=source,
    )


@dataclass(frozen=True)
class RunOutcome:
    """How a run that did not fail ended: ``state`` is SUCCEEDED or SKIPPED (a failed run raises)."""

    run_id: str
    state: str
    seconds: float


def _state(value: Any) -> str:
    return str(value or "PENDING").upper()


def failed_steps(run: Any) -> tuple[tuple[str, ...], str | None]:
    """The failed tasks of a run that contain no other failed task (the steps, not the DAGs around
    them) and the first one's error, from ``run_details.task_details``."""
    details = getattr(run, "run_details", None)
    tasks = list(getattr(details, "task_details", None) or [])
    failed = [t for t in tasks if _state(t.state) in FAILED_STATES]
    outer = {t.parent_task_id for t in failed if t.parent_task_id}
    ids = {t.task_id for t in failed}
    for task in failed:
        if any(child.task_id in ids for child in task.child_tasks or []):
            outer.add(task.task_id)
    inner = [t for t in failed if t.task_id not in outer]
    names = tuple(str(t.display_name or t.task_id) for t in inner)
    errors = [t.error.message for t in inner if t.error is not None and t.error.message]
    run_error = getattr(getattr(run, "error", None), "message", None)
    return names, (errors[0] if errors else run_error or None)


def wait_for_run(
    client: Any,
    run_id: str,
    timeout: float,
    *,
    on_change: Callable[[str], None] | None = None,
    poll_seconds: float | None = None,
) -> RunOutcome:
    """Follow a run until it ends, calling ``on_change`` with a line for each change of the run's state
    and of each step's.

    Returns:
        The run's outcome, when it SUCCEEDED (or was SKIPPED).

    Raises:
        PipelineError: The run FAILED or was CANCELED (the message names the failed step and its
            error), or it did not end within ``timeout`` seconds.
        KfpApiError: The server did not answer.
    """
    poll = POLL_SECONDS if poll_seconds is None else poll_seconds
    report = on_change or (lambda line: None)
    started = time.monotonic()
    deadline = started + timeout
    seen: dict[str, str] = {}
    state = ""
    while True:
        with calling(client, f"reading run {run_id}"):
            run = client.runs.run_service_get_run(_request_timeout=CALL_TIMEOUT, run_id=run_id)
        _report_steps(run, seen, report)
        if _state(run.state) != state:
            state = _state(run.state)
            report(f"run {run_id}: {state}")
        if state in FINAL_STATES:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise PipelineError(
                f"run {run_id} did not end within {timeout:g} s (it is {state}); it goes on in Kubeflow"
            )
        time.sleep(min(poll, left))
    if state not in FAILED_STATES:
        return RunOutcome(run_id, state, time.monotonic() - started)
    steps, error = failed_steps(run)
    where = f"at step {', '.join(steps)}" if steps else "before any step failed"
    raise PipelineError(f"run {run_id} {state} {where}" + (f": {error}" if error else ""))


def _report_steps(run: Any, seen: dict[str, str], report: Callable[[str], None]) -> None:
    """Report each step whose state differs from ``seen`` (updated)."""
    tasks = getattr(getattr(run, "run_details", None), "task_details", None) or []
    for task in tasks:
        # DAG tasks (the pipeline, a condition, a loop) hold child tasks: their states say nothing new.
        if task.child_tasks:
            continue
        name, task_state = str(task.display_name or task.task_id), _state(task.state)
        if seen.get(name) != task_state:
            seen[name] = task_state
            report(f"step {name}: {task_state}")

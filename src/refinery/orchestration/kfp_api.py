"""Runs of refinery's pipelines through the Kubeflow Pipelines API (v2beta1), with the kfp SDK's client.

:func:`connect` reaches the API the configuration's ``kfp`` section names (the environment wins) with the
credentials the environment holds; :func:`ensure_pipeline_version` uploads a compiled pipeline as a
version named after this refinery and a hash of the IR, or finds the one uploaded before;
:func:`submit_training` compiles the training pipeline exactly as ``refinery compile`` does and starts a
run of that version with the run form's typed parameters; :func:`wait_for_run` follows a run to its end
and names the step that failed. ``refinery schedules`` (refinery.orchestration.schedules) builds on the
same functions.

Where the settings come from, first wins:

- host: ``REFINERY_KFP_HOST``, kfp's ``KF_PIPELINES_ENDPOINT``, ``kfp.host``;
- run links: ``KF_PIPELINES_UI_ENDPOINT``, ``kfp.ui_url``, the host;
- credentials: a bearer token in ``REFINERY_KFP_TOKEN``; else the Kubeflow Pipelines service-account token
  file of a pod (``KF_PIPELINES_SA_TOKEN_PATH``, default /var/run/secrets/kubeflow/pipelines/token) when it
  exists, re-read before each call as the kubelet rotates it; else none. (kfp.Client reads that file
  itself only when it is given no host; refinery always gives one, so it hands the file over.)
- namespace (multi-user Kubeflow): ``kfp.namespace``, passed to every call that takes one.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.config import KfpConfig, RunConfig
from refinery.errors import ConfigError, KfpApiError, PipelineError

if TYPE_CHECKING:
    from refinery.orchestration.compiling import CompiledPipeline

HOST_ENV = "REFINERY_KFP_HOST"
KFP_HOST_ENV = "KF_PIPELINES_ENDPOINT"
UI_ENV = "KF_PIPELINES_UI_ENDPOINT"
TOKEN_ENV = "REFINERY_KFP_TOKEN"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"

#: Seconds between two looks at a running run.
POLL_SECONDS = 5.0
#: Seconds a single API call may take before it counts as unanswered.
CALL_TIMEOUT = 30.0
FINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
FAILED_STATES = frozenset({"FAILED", "CANCELED"})
_PAGE_SIZE = 100


@dataclass(frozen=True)
class Endpoint:
    """The Kubeflow Pipelines API a command talks to, with where each setting came from."""

    host: str
    host_from: str
    namespace: str | None
    experiment: str
    ui_url: str
    verify_ssl: bool = True
    ca_cert: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    service_account: str | None = None

    def run_url(self, run_id: str) -> str:
        """The run's page in the Kubeflow Pipelines UI."""
        return f"{self.ui_url.rstrip('/')}/#/runs/details/{run_id}"

    @property
    def credentials(self) -> str:
        """How requests authenticate, in words (never the token)."""
        if self.token:
            return f"a bearer token from {TOKEN_ENV}"
        if self.token_file:
            return f"the service-account token in {self.token_file}"
        return "no credentials"


def _settings(cfg: RunConfig | KfpConfig | None) -> KfpConfig:
    if isinstance(cfg, RunConfig):
        return cfg.kfp
    return cfg or KfpConfig()


def endpoint(cfg: RunConfig | KfpConfig | None = None) -> Endpoint:
    """The API ``cfg`` names, with the environment's settings on top (see the module's docstring).

    Raises:
        KfpApiError: No host is configured anywhere; the message says how to set one.
    """
    kfp = _settings(cfg)
    host, host_from = kfp.host, "kfp.host"
    for name in (HOST_ENV, KFP_HOST_ENV):
        if os.environ.get(name, "").strip():
            host, host_from = os.environ[name].strip(), name
            break
    if not host:
        raise KfpApiError(
            "no Kubeflow Pipelines API is configured: set kfp.host in the configuration (e.g. kfp: {host:"
            f" http://ml-pipeline.kubeflow.svc.cluster.local:8888}}, or --set kfp.host=URL), or {HOST_ENV}"
            f" (or {KFP_HOST_ENV}) in the environment"
        )
    if not host.startswith(("http://", "https://")):
        raise KfpApiError(f"{host_from} {host!r} is not an http:// or https:// URL")
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    token_file = None
    if token is None:
        path = os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_PATH
        token_file = path if os.path.isfile(path) else None
    ui = os.environ.get(UI_ENV, "").strip() or kfp.ui_url or host
    return Endpoint(
        host=host.rstrip("/"),
        host_from=host_from,
        namespace=kfp.namespace,
        experiment=kfp.experiment,
        ui_url=ui.rstrip("/"),
        verify_ssl=kfp.verify_ssl,
        ca_cert=kfp.ca_cert,
        token=token,
        token_file=token_file,
        service_account=kfp.service_account,
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect from the API's address is a login page (dex, oauth2-proxy), never the API.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _probe(ep: Endpoint) -> None:
    """One healthz call, so that an unreachable host or refused credentials fail at once and say so
    (kfp.Client retries its own healthz call for half a minute, then reports a timeout)."""
    headers = {"Accept": "application/json"}
    if ep.token:
        headers["Authorization"] = f"Bearer {ep.token}"
    elif ep.token_file:
        with contextlib.suppress(OSError):
            headers["Authorization"] = f"Bearer {Path(ep.token_file).read_text().strip()}"
    context = None
    if ep.host.startswith("https://"):
        context = ssl.create_default_context(cafile=ep.ca_cert)
        if not ep.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    # kfp's client ignores HTTP(S)_PROXY; so does the probe.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )
    where = f"the Kubeflow Pipelines API at {ep.host} ({ep.host_from})"
    request = urllib.request.Request(f"{ep.host}/apis/v2beta1/healthz", headers=headers)
    try:
        with opener.open(request, timeout=CALL_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KfpApiError(
                f"{where} refused the credentials (HTTP {exc.code}) with {ep.credentials}: set {TOKEN_ENV}"
                " to a token the deployment accepts"
            ) from None
        if exc.code in (301, 302, 303, 307, 308):
            raise KfpApiError(
                f"{where} redirects to {exc.headers.get('Location', 'another page')} (a login page?): the"
                f" API needs a bearer token ({TOKEN_ENV}) or its in-cluster address"
            ) from None
        if exc.code == 404:
            raise KfpApiError(
                f"{where} has no /apis/v2beta1/healthz (HTTP 404): is it the address of the ml-pipeline"
                " service (port 8888), or a proxy in front of it?"
            ) from None
        raise KfpApiError(f"{where} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KfpApiError(f"{where} is unreachable: {reason}") from None
    try:
        json.loads(body or b"{}")
    except ValueError:
        raise KfpApiError(f"{where} did not answer as the Kubeflow Pipelines API (not JSON)") from None


def connect(cfg: RunConfig | KfpConfig | Endpoint | None = None) -> Any:
    """A ``kfp.Client`` for the API ``cfg`` names, its credentials and namespace set.

    Raises:
        KfpApiError: No host is configured; the host is unreachable, refuses the credentials or is not
            a Kubeflow Pipelines API. The message names the host.
    """
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    ep = cfg if isinstance(cfg, Endpoint) else endpoint(cfg)
    _probe(ep)
    credentials = ServiceAccountTokenVolumeCredentials(ep.token_file) if ep.token_file else None
    with warnings.catch_warnings(), _calling(ep.host, "connecting"):
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": so does refinery.
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(
            host=ep.host,
            # "kubeflow" is kfp's default, which means none; every call below passes the namespace.
            namespace=ep.namespace or "kubeflow",
            existing_token=ep.token,
            credentials=credentials,
            ui_host=ep.ui_url,
            verify_ssl=ep.verify_ssl,
            ssl_ca_cert=ep.ca_cert,
        )


def _host(client: Any) -> str:
    config = getattr(client, "_existing_config", None)
    return str(getattr(config, "host", "") or "the Kubeflow Pipelines API")


def _error_text(exc: Any) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or ""
    detail = ""
    body = getattr(exc, "body", None)
    if body:
        try:
            parsed = json.loads(body)
            detail = (
                str(parsed.get("message") or parsed.get("error") or "") if isinstance(parsed, dict) else ""
            )
        except (TypeError, ValueError):
            detail = str(body)[:300]
    head = f"HTTP {status} {reason}".strip() if status else str(reason or exc)
    return f"{head}: {detail}" if detail else head


@contextlib.contextmanager
def _calling(host: str, what: str) -> Iterator[None]:
    """Turn the client's errors into a KfpApiError naming the host and the call."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        if exc.status == 0:  # the client's own wrapping of a TLS failure
            raise KfpApiError(f"{host} is unreachable ({what}): {exc.reason}") from None
        raise KfpApiError(f"{what} at {host} failed: {_error_text(exc)}", status=exc.status) from None
    except urllib3.exceptions.HTTPError as exc:
        raise KfpApiError(f"{host} is unreachable ({what}): {exc}") from None


def calling(client: Any, what: str) -> contextlib.AbstractContextManager[None]:
    """A context in which the client's errors become a KfpApiError naming the host and ``what``."""
    return _calling(_host(client), what)


def _conflict(exc: KfpApiError) -> bool:
    """Whether the server refused to create something because it exists (created since we looked)."""
    return exc.status == 409


def pages(fetch: Callable[[str], Any], attribute: str) -> Iterator[Any]:
    """Every item of a paged list call: ``fetch(page_token)`` until no ``next_page_token`` is left."""
    token = ""
    while True:
        response = fetch(token)
        yield from getattr(response, attribute, None) or []
        token = getattr(response, "next_page_token", None) or ""
        if not token:
            return


def name_filter(name: str) -> str:
    """A v2beta1 filter: ``display_name`` equals ``name``."""
    return json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})


def _namespace_arg(namespace: str | None) -> dict[str, str]:
    return {"namespace": namespace} if namespace else {}


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
                page_size=_PAGE_SIZE,
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
        client, "pipeline", name, list_call, "pipelines", "pipeline_id", **_namespace_arg(namespace)
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


def _create_pipeline(client: Any, compiled: CompiledPipeline, namespace: str | None) -> str:
    import kfp_server_api

    body = kfp_server_api.V2beta1Pipeline(
        display_name=compiled.name,
        name=compiled.name,
        description=f"refinery's {compiled.pipeline} pipeline; versions are uploaded by refinery.",
        namespace=namespace,
    )
    try:
        with calling(client, f"creating pipeline {compiled.name}"):
            return str(
                client.pipelines.pipeline_service_create_pipeline(
                    _request_timeout=CALL_TIMEOUT, pipeline=body
                ).pipeline_id
            )
    except KfpApiError as exc:
        # Created by another refinery since we looked.
        found = find_pipeline(client, compiled.name, namespace) if _conflict(exc) else None
        if found is None:
            raise
        return found


def _upload_version(client: Any, compiled: CompiledPipeline, pipeline_id: str) -> str:
    name = compiled.version_name
    with tempfile.TemporaryDirectory(prefix="refinery-upload-") as folder:
        path = Path(folder) / f"{compiled.name}.yaml"
        path.write_text(compiled.text, encoding="utf-8")
        try:
            with calling(client, f"uploading pipeline version {name} of {compiled.name}"):
                version = client.pipeline_uploads.upload_pipeline_version(
                    str(path),
                    _request_timeout=CALL_TIMEOUT,
                    name=name,
                    display_name=name,
                    pipelineid=pipeline_id,
                    description=f"Compiled by refinery {name.rsplit('-', 1)[0]}; IR sha256 {compiled.digest}...",
                )
                return str(version.pipeline_version_id)
        except KfpApiError as exc:
            found = find_version(client, pipeline_id, name) if _conflict(exc) else None
            if found is None:
                raise
            return found


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
        client, "experiment", name, list_call, "experiments", "experiment_id", **_namespace_arg(namespace)
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
    try:
        with calling(client, f"creating experiment {name}"):
            return str(
                client.experiments.experiment_service_create_experiment(
                    _request_timeout=CALL_TIMEOUT, experiment=body
                ).experiment_id
            )
    except KfpApiError as exc:
        found = find_experiment(client, name, namespace) if _conflict(exc) else None
        if found is None:
            raise
        return found


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
    started = time.monotonic()
    deadline = started + timeout
    seen: dict[str, str] = {}
    state = ""
    while True:
        with calling(client, f"reading run {run_id}"):
            run = client.runs.run_service_get_run(_request_timeout=CALL_TIMEOUT, run_id=run_id)
        tasks = getattr(getattr(run, "run_details", None), "task_details", None) or []
        for task in tasks:
            # DAG tasks (the pipeline, a condition, a loop) hold child tasks: their states say nothing new.
            if task.child_tasks:
                continue
            name, task_state = str(task.display_name or task.task_id), _state(task.state)
            if seen.get(name) != task_state:
                seen[name] = task_state
                if on_change is not None:
                    on_change(f"step {name}: {task_state}")
        if _state(run.state) != state:
            state = _state(run.state)
            if on_change is not None:
                on_change(f"run {run_id}: {state}")
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

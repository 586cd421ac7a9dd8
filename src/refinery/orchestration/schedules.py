"""Recurring runs kept in git: ``refinery schedules apply|diff|list -f schedules.yaml``.

A schedules file declares each recurring run: its name, a trigger (a cron expression or an interval),
which pipeline it runs and the configuration file (with ``--set`` style overrides) that pipeline is
compiled from, its parameters, concurrency, catch-up and whether it is enabled. Each schedule runs a
pinned pipeline version: the one ``refinery submit`` would upload for the same configuration, named after
this refinery and a hash of the compiled pipeline.

``apply`` makes Kubeflow Pipelines match the file. It creates what is missing; it replaces a recurring run
whose declaration changed (Kubeflow cannot change one in place: it deletes it and creates it again under
the same name, saying per field what changed); it enables or pauses one in place; and it pauses (the
default) or deletes (``removed: delete``) the recurring runs refinery created that the file no longer
declares. Refinery marks what it creates with ``[refinery-schedule spec=<hash>]`` in the description, the
hash of the declaration; a recurring run without that mark is never touched. Applying an unchanged file
calls nothing that changes anything. Every step is one call that can be repeated: after a failure, the
next ``apply`` finishes the work (a replaced recurring run is deleted before it is created again, so a
failure between the two leaves it missing, never doubled). ``diff`` prints the plan without acting;
``list`` shows the recurring runs with their trigger, status, pipeline version and last run.

The file itself (its model, reading and compiling it) is :mod:`refinery.orchestration.schedules_file`,
whose names are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from refinery.config import RunConfig
from refinery.errors import KfpApiError
from refinery.orchestration.kfp_api import (
    CALL_TIMEOUT,
    Endpoint,
    PipelineVersion,
    calling,
    endpoint,
    ensure_experiment,
    ensure_pipeline_version,
    pages,
)
from refinery.orchestration.schedules_file import (
    KEPT_BY,
    MARKER,
    Declared,
    Desired,
    Schedule,
    SchedulesFile,
    declared,
    endpoint_of,
    load_schedules,
    read_configs,
    trigger_text,
)

__all__ = [
    "MARKER",
    "Applied",
    "Change",
    "Declared",
    "Desired",
    "Existing",
    "Plan",
    "Row",
    "Schedule",
    "SchedulesFile",
    "apply",
    "declared",
    "existing",
    "format_rows",
    "list_endpoint",
    "list_schedules",
    "load_schedules",
    "plan",
]


# ---- what the server holds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """A recurring run on the server."""

    recurring_run_id: str
    name: str
    spec_hash: str | None
    enabled: bool
    raw: Any = field(repr=False)

    @property
    def managed(self) -> bool:
        """Whether refinery created it (its description holds refinery's mark)."""
        return self.spec_hash is not None

    @property
    def trigger(self) -> str:
        trigger = getattr(self.raw, "trigger", None)
        cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None)
        seconds = getattr(getattr(trigger, "periodic_schedule", None), "interval_second", None)
        return trigger_text(cron, int(seconds) if seconds else None)


def _enabled(raw: Any) -> bool:
    status = str(raw.status or "").upper()
    if status in ("ENABLED", "DISABLED"):
        return status == "ENABLED"
    return str(raw.mode or "").upper() == "ENABLE"


def existing(client: Any, namespace: str | None) -> list[Existing]:
    """Every recurring run the client may see (in ``namespace``)."""
    extra = {"namespace": namespace} if namespace else {}

    def fetch(token: str) -> Any:
        return client.recurring_runs.recurring_run_service_list_recurring_runs(
            _request_timeout=CALL_TIMEOUT, page_token=token, page_size=100, **extra
        )

    out = []
    with calling(client, "listing recurring runs"):
        for raw in pages(fetch, "recurring_runs"):
            mark = MARKER.search(raw.description or "")
            out.append(
                Existing(
                    str(raw.recurring_run_id),
                    str(raw.display_name),
                    mark.group(1) if mark else None,
                    _enabled(raw),
                    raw,
                )
            )
    return out


class _Names:
    """Names of pipeline versions and experiments by id, looked up once each."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._versions: dict[tuple[str, str], str] = {}
        self._experiments: dict[str, str] = {}

    def version(self, raw: Any) -> str:
        ref = getattr(raw, "pipeline_version_reference", None)
        pipeline_id = getattr(ref, "pipeline_id", None) or ""
        version_id = (
            getattr(ref, "pipeline_version_id", None) or getattr(raw, "pipeline_version_id", None) or ""
        )
        key = (pipeline_id, version_id)
        if key not in self._versions:
            try:
                with calling(self._client, "reading a pipeline version"):
                    pipeline = self._client.pipelines.pipeline_service_get_pipeline(
                        _request_timeout=CALL_TIMEOUT, pipeline_id=pipeline_id
                    )
                    version = self._client.pipelines.pipeline_service_get_pipeline_version(
                        _request_timeout=CALL_TIMEOUT, pipeline_id=pipeline_id, pipeline_version_id=version_id
                    )
                self._versions[key] = f"{pipeline.display_name} {version.display_name}"
            except KfpApiError:
                self._versions[key] = f"(version {version_id or 'unknown'}, not found)"
        return self._versions[key]

    def experiment(self, experiment_id: str | None) -> str:
        experiment_id = experiment_id or ""
        if experiment_id not in self._experiments:
            try:
                with calling(self._client, "reading an experiment"):
                    found = self._client.experiments.experiment_service_get_experiment(
                        _request_timeout=CALL_TIMEOUT, experiment_id=experiment_id
                    )
                self._experiments[experiment_id] = str(found.display_name)
            except KfpApiError:
                self._experiments[experiment_id] = f"(experiment {experiment_id or 'unknown'}, not found)"
        return self._experiments[experiment_id]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else f"({len(text)} characters)"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def _differences(desired: Desired, current: Existing, names: _Names) -> list[str]:
    """What changed, field by field, between the recurring run on the server and the declaration."""
    raw, s = current.raw, desired.schedule
    out = []
    wanted = trigger_text(s.cron, s.interval_seconds)
    if current.trigger != wanted:
        out.append(f"trigger: {current.trigger} -> {wanted}")
    version = names.version(raw)
    wanted_version = f"{desired.compiled.name} {desired.compiled.version_name}"
    if version != wanted_version:
        out.append(f"pipeline version: {version} -> {wanted_version}")
    have = dict(getattr(getattr(raw, "runtime_config", None), "parameters", None) or {})
    for key in sorted(set(have) | set(desired.parameters)):
        old, new = have.get(key), desired.parameters.get(key)
        if not _same(old, new):
            out.append(f"parameters.{key}: {_short(old)} -> {_short(new)}")
    concurrency = int(raw.max_concurrency or 1)
    if concurrency != s.max_concurrency:
        out.append(f"max_concurrency: {concurrency} -> {s.max_concurrency}")
    catchup = not bool(raw.no_catchup)
    if catchup != s.catchup:
        out.append(f"catchup: {str(catchup).lower()} -> {str(s.catchup).lower()}")
    experiment = names.experiment(raw.experiment_id)
    if experiment != desired.experiment:
        out.append(f"experiment: {experiment} -> {desired.experiment}")
    account = getattr(raw, "service_account", None) or None
    if desired.service_account is not None and account != desired.service_account:
        out.append(f"service_account: {account or '-'} -> {desired.service_account or '-'}")
    lead = (raw.description or "").partition(KEPT_BY)[0].strip()
    if lead != s.description.strip():
        out.append(f"description: {_short(lead)} -> {_short(s.description.strip())}")
    return out or ["the declaration's hash differs (written by another refinery version)"]


# ---- the plan -------------------------------------------------------------------------------------------

Action = Literal["create", "replace", "enable", "pause", "delete"]


@dataclass(frozen=True)
class Change:
    """One step of a plan.

    Attributes:
        action: create, replace (delete, then create again under the same name), enable, pause, delete.
        name: The schedule (the recurring run's display name).
        details: Why, or what changed (per field for a replacement).
        desired: The declaration (create, replace, enable and pause of a declared schedule).
        targets: The ids of the recurring runs it deletes, enables or pauses.
    """

    action: Action
    name: str
    details: tuple[str, ...] = ()
    desired: Desired | None = None
    targets: tuple[str, ...] = ()

    def to_text(self) -> str:
        head = {
            "create": f"+ create {self.name}",
            "replace": f"~ replace {self.name} (delete and create again, same name)",
            "enable": f"~ enable {self.name}",
            "pause": f"~ pause {self.name}",
            "delete": f"- delete {self.name}",
        }[self.action]
        return "\n".join([head, *(f"    {line}" for line in self.details)])


@dataclass(frozen=True)
class Plan:
    """What ``apply`` would do to make Kubeflow Pipelines match a schedules file."""

    source: str
    endpoint: Endpoint
    changes: tuple[Change, ...]
    unchanged: tuple[str, ...]
    unmanaged: tuple[str, ...]

    def to_text(self) -> str:
        where = self.endpoint.host + (
            f" (namespace {self.endpoint.namespace})" if self.endpoint.namespace else ""
        )
        lines = [f"{self.source} against Kubeflow Pipelines at {where}:"]
        lines += [change.to_text() for change in self.changes] or ["no changes"]
        if self.unchanged and self.changes:
            lines.append(f"unchanged: {', '.join(self.unchanged)}")
        if self.unmanaged:
            lines.append(f"not created by refinery, left alone: {', '.join(self.unmanaged)}")
        return "\n".join(lines)


def _describe_new(desired: Desired) -> tuple[str, ...]:
    s = desired.schedule
    state = "enabled" if s.enabled else "paused"
    return (
        f"{trigger_text(s.cron, s.interval_seconds)}, {desired.compiled.name} {desired.compiled.version_name},"
        f" experiment {desired.experiment}, {state}",
    )


def plan(declaration: Declared, client: Any) -> Plan:
    """Compare the declaration with the server's recurring runs (reads only)."""
    runs = existing(client, declaration.endpoint.namespace)
    managed = [r for r in runs if r.managed]
    names = _Names(client)
    declared_names = {d.name for d in declaration.desired}
    changes: list[Change] = []
    unchanged: list[str] = []
    for desired in declaration.desired:
        steps = _plan_declared(desired, [r for r in managed if r.name == desired.name], names)
        if steps:
            changes += steps
        else:
            unchanged.append(desired.name)
    for run in managed:
        if run.name not in declared_names and (change := _plan_removed(run, declaration.file.removed)):
            changes.append(change)
    unmanaged = tuple(f"{r.name} ({r.recurring_run_id})" for r in runs if not r.managed)
    return Plan(declaration.source, declaration.endpoint, tuple(changes), tuple(unchanged), unmanaged)


def _plan_declared(desired: Desired, mine: list[Existing], names: _Names) -> list[Change]:
    """The changes that make ``mine`` (the managed recurring runs of its name) the declared one; none
    when it already is."""
    if not mine:
        return [Change("create", desired.name, _describe_new(desired), desired)]
    matching = [r for r in mine if r.spec_hash == desired.spec_hash]
    if not matching:
        details = _differences(desired, mine[0], names)
        if len(mine) > 1:
            details.append(f"{len(mine)} recurring runs of that name replaced by one")
        targets = tuple(r.recurring_run_id for r in mine)
        return [Change("replace", desired.name, tuple(details), desired, targets)]
    keep = matching[0]
    changes = [
        Change(
            "delete", desired.name, ("a second recurring run of that name",), desired, (run.recurring_run_id,)
        )
        for run in mine
        if run is not keep
    ]
    if keep.enabled != desired.schedule.enabled:
        action: Action = "enable" if desired.schedule.enabled else "pause"
        state = "enabled: true" if desired.schedule.enabled else "enabled: false"
        changes.append(Change(action, desired.name, (state,), desired, (keep.recurring_run_id,)))
    return changes


def _plan_removed(run: Existing, removed: str) -> Change | None:
    """The change to a managed recurring run the file no longer declares (None: it is paused already)."""
    if removed == "delete":
        return Change(
            "delete", run.name, ("no longer declared (removed: delete)",), None, (run.recurring_run_id,)
        )
    if run.enabled:
        return Change(
            "pause", run.name, ("no longer declared (removed: pause)",), None, (run.recurring_run_id,)
        )
    return None


# ---- applying it ----------------------------------------------------------------------------------------


def _create(client: Any, desired: Desired, version: PipelineVersion, experiment_id: str, source: str) -> str:
    import kfp_server_api

    s = desired.schedule
    if s.cron:
        trigger = kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=s.cron))
    else:
        trigger = kfp_server_api.V2beta1Trigger(
            periodic_schedule=kfp_server_api.V2beta1PeriodicSchedule(interval_second=str(s.interval_seconds))
        )
    body = kfp_server_api.V2beta1RecurringRun(
        display_name=s.name,
        description=desired.description(source),
        experiment_id=experiment_id,
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=version.pipeline_id, pipeline_version_id=version.version_id
        ),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=desired.parameters),
        trigger=trigger,
        max_concurrency=str(s.max_concurrency),
        no_catchup=not s.catchup,
        mode=kfp_server_api.RecurringRunMode.ENABLE if s.enabled else kfp_server_api.RecurringRunMode.DISABLE,
        service_account=desired.service_account,
    )
    with calling(client, f"creating recurring run {s.name}"):
        created = client.recurring_runs.recurring_run_service_create_recurring_run(
            _request_timeout=CALL_TIMEOUT, recurring_run=body
        )
    return str(created.recurring_run_id)


@dataclass(frozen=True)
class Applied:
    """What ``apply`` did."""

    plan: Plan
    done: tuple[str, ...]

    def to_text(self) -> str:
        return "\n".join(self.done) if self.done else "no changes"


def apply(declaration: Declared, client: Any, *, show: Callable[[str], None] | None = None) -> Applied:
    """Make the server's recurring runs match the declaration, one change at a time.

    Args:
        declaration: The schedules file, compiled (:func:`declared`).
        client: A client from :func:`refinery.orchestration.kfp_api.connect`.
        show: Called with a line as each change is done.

    Raises:
        KfpApiError: A call failed; the message names the schedule and the change, and says how many
            were done. Applying again finishes the rest.
    """
    the_plan = plan(declaration, client)
    namespace = declaration.endpoint.namespace
    versions: dict[str, PipelineVersion] = {}
    experiments: dict[str, str] = {}
    done: list[str] = []
    for change in the_plan.changes:
        try:
            line = _apply_one(client, change, declaration.source, namespace, versions, experiments)
        except KfpApiError as exc:
            raise KfpApiError(
                f"schedule {change.name!r}: {change.action} failed ({len(done)} of {len(the_plan.changes)}"
                f" changes done): {exc}. Run `refinery schedules apply -f {declaration.source}` again to"
                " finish",
                status=exc.status,
            ) from None
        done.append(line)
        if show is not None:
            show(line)
    return Applied(the_plan, tuple(done))


def _apply_one(
    client: Any,
    change: Change,
    source: str,
    namespace: str | None,
    versions: dict[str, PipelineVersion],
    experiments: dict[str, str],
) -> str:
    if change.action in ("create", "replace"):
        desired = change.desired
        assert desired is not None
        # The version and the experiment first: a failure there leaves the old recurring run in place.
        key = desired.compiled.version_name + desired.compiled.name
        if key not in versions:
            versions[key] = ensure_pipeline_version(client, desired.compiled, namespace)
        if desired.experiment not in experiments:
            experiments[desired.experiment] = ensure_experiment(client, desired.experiment, namespace)
        for target in change.targets:
            with calling(client, f"deleting recurring run {change.name} ({target})"):
                client.recurring_runs.recurring_run_service_delete_recurring_run(
                    _request_timeout=CALL_TIMEOUT, recurring_run_id=target
                )
        new_id = _create(client, desired, versions[key], experiments[desired.experiment], source)
        verb = "created" if change.action == "create" else "replaced"
        return "\n".join([f"{verb} {change.name} ({new_id})", *(f"    {d}" for d in change.details)])
    for target in change.targets:
        what = {"enable": "enabling", "pause": "pausing", "delete": "deleting"}[change.action]
        with calling(client, f"{what} recurring run {change.name} ({target})"):
            api = client.recurring_runs
            if change.action == "enable":
                api.recurring_run_service_enable_recurring_run(
                    _request_timeout=CALL_TIMEOUT, recurring_run_id=target
                )
            elif change.action == "pause":
                api.recurring_run_service_disable_recurring_run(
                    _request_timeout=CALL_TIMEOUT, recurring_run_id=target
                )
            else:
                api.recurring_run_service_delete_recurring_run(
                    _request_timeout=CALL_TIMEOUT, recurring_run_id=target
                )
    verb = {"enable": "enabled", "pause": "paused", "delete": "deleted"}[change.action]
    return f"{verb} {change.name} ({', '.join(change.targets)}): {'; '.join(change.details)}"


# ---- listing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of ``refinery schedules list``."""

    name: str
    trigger: str
    status: str
    version: str
    last_run: str
    managed: str


def _last_runs(client: Any, experiment_ids: set[str], limit: int = 500) -> dict[str, Any]:
    """The newest run of each recurring run, from the newest ``limit`` runs of each experiment."""
    newest: dict[str, Any] = {}
    for experiment_id in experiment_ids:

        def fetch(token: str, experiment_id: str = experiment_id) -> Any:
            return client.runs.run_service_list_runs(
                _request_timeout=CALL_TIMEOUT,
                experiment_id=experiment_id,
                page_token=token,
                page_size=100,
                sort_by="created_at desc",
            )

        with calling(client, "listing runs"):
            for count, run in enumerate(pages(fetch, "runs")):
                if count >= limit:
                    break
                key = run.recurring_run_id or ""
                if key and key not in newest:
                    newest[key] = run
    return newest


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if hasattr(value, "strftime") else str(value or "")


def list_schedules(client: Any, ep: Endpoint, file: tuple[str, SchedulesFile] | None = None) -> list[Row]:
    """Every recurring run the client may see, and with a schedules file, each declared one that is not
    on the server yet."""
    runs = existing(client, ep.namespace)
    names = _Names(client)
    last = _last_runs(client, {str(r.raw.experiment_id) for r in runs if r.raw.experiment_id})
    rows = []
    declared_names = {s.name for s in file[1].schedules} if file else set()
    for run in sorted(runs, key=lambda r: (r.name, r.recurring_run_id)):
        latest = last.get(run.recurring_run_id)
        last_text = f"{str(latest.state or '').upper()} {_when(latest.created_at)}" if latest else "none yet"
        if not run.managed:
            managed = "no"
        elif file is None or run.name in declared_names:
            managed = "refinery"
        else:
            managed = f"refinery, not in {file[0]}"
        status = "enabled" if run.enabled else "paused"
        rows.append(Row(run.name, run.trigger, status, names.version(run.raw), last_text, managed))
    if file:
        present = {r.name for r in runs if r.managed}
        for s in file[1].schedules:
            if s.name not in present:
                trigger = trigger_text(s.cron, s.interval_seconds)
                rows.append(Row(s.name, trigger, "not applied", "-", "-", f"declared in {file[0]}"))
    return rows


def format_rows(rows: list[Row]) -> str:
    """The rows as an aligned table."""
    header = Row("NAME", "TRIGGER", "STATUS", "PIPELINE VERSION", "LAST RUN", "MANAGED")
    table = [header, *rows]
    columns = list(
        zip(*[(r.name, r.trigger, r.status, r.version, r.last_run, r.managed) for r in table], strict=True)
    )
    widths = [max(len(value) for value in column) for column in columns]
    lines = []
    for r in table:
        values = (r.name, r.trigger, r.status, r.version, r.last_run, r.managed)
        lines.append("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())
    if not rows:
        lines.append("(no recurring runs)")
    return "\n".join(lines)


def list_endpoint(
    path: str | Path | None = None, cfg: RunConfig | None = None
) -> tuple[Endpoint, tuple[str, SchedulesFile] | None]:
    """The API ``refinery schedules list`` reads: the one a schedules file's configurations name, or
    ``cfg``'s, or the environment's."""
    if path is not None:
        source = Path(path)
        file = load_schedules(source)
        return endpoint_of(read_configs(source, file)), (str(source), file)
    return endpoint(cfg), None

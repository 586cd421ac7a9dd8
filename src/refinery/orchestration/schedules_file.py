"""The schedules file: what ``refinery schedules`` keeps in Kubeflow Pipelines, read, checked and compiled.

A schedules file declares each recurring run: its name, a trigger (a cron expression or an interval),
which pipeline it runs and the configuration file (with ``--set`` style overrides) that pipeline is
compiled from, its parameters, concurrency, catch-up and whether it is enabled. :func:`load_schedules`
reads and checks it (messages name the dotted path of each problem); :func:`declared` compiles each
schedule's pipeline into the recurring run it must be (:class:`Desired`), with the hash of that
declaration that refinery leaves in the description (:data:`MARKER`). Comparing it with the server and
acting on it is :mod:`refinery.orchestration.schedules`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refinery.config import RunConfig, read_config
from refinery.errors import ConfigError
from refinery.orchestration.compiling import PIPELINES, CompiledPipeline, compile_pipeline
from refinery.orchestration.kfp_api import Endpoint, endpoint, run_parameters

#: The mark refinery leaves in the description of a recurring run it created: the declaration's hash.
MARKER = re.compile(r"\[refinery-schedule spec=([0-9a-f]{16})\]")
#: What follows a declared description in the recurring run's own.
KEPT_BY = "Kept by `refinery schedules apply"
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/\-#LW]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Schedule(_Strict):
    """One recurring run."""

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="The recurring run's display name in Kubeflow (lower case, digits and '-').",
    )
    pipeline: str = Field(description=f"Which pipeline: {', '.join(PIPELINES)}.")
    config: str = Field(description="The run configuration it is compiled from, relative to this file.")
    overrides: tuple[str, ...] = Field(
        (), alias="set", description="--set style overrides of the configuration (KEY=VALUE)."
    )
    cron: str | None = Field(
        None,
        description="Kubeflow's cron: six fields, seconds first, e.g. '0 0 3 * * 1' (Mondays 03:00 UTC).",
    )
    interval: str | None = Field(
        None, description="Or an interval: seconds, or a number with s, m, h or d, e.g. 1h."
    )
    parameters: dict[str, str | bool | int | float] = Field(
        default_factory=dict, description="Run parameters that differ from the configuration's values."
    )
    max_concurrency: int = Field(1, ge=1, le=10, description="Runs of it at the same time (Kubeflow: 1-10).")
    catchup: bool = Field(
        False, description="Start the runs missed while paused or behind schedule (Kubeflow's backfill)."
    )
    enabled: bool = Field(True, description="false: created or kept paused.")
    experiment: str | None = Field(
        None,
        min_length=1,
        description="The experiment its runs go to (default: the configuration's kfp.experiment).",
    )
    description: str = Field("", description="Shown in Kubeflow before refinery's mark.")

    @field_validator("pipeline")
    @classmethod
    def _known_pipeline(cls, value: str) -> str:
        if value not in PIPELINES:
            raise ValueError(f"unknown pipeline {value!r}; known: {', '.join(PIPELINES)}")
        return value

    @field_validator("cron")
    @classmethod
    def _six_fields(cls, value: str | None) -> str | None:
        if value is None:
            return None
        fields = value.split()
        if len(fields) == 5:
            raise ValueError(
                f"{value!r} has 5 fields; Kubeflow's cron has 6, seconds first: '0 {value}' runs at second 0"
            )
        if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"{value!r} is not a cron expression of 6 fields (seconds first)")
        return " ".join(fields)

    @field_validator("interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an interval")
        match = _DURATION.match(str(value).strip())
        if not match or int(match.group(1)) == 0:
            raise ValueError(f"{value!r} is not an interval: seconds, or a number with s, m, h or d, e.g. 1h")
        return str(value).strip()

    @model_validator(mode="after")
    def _one_trigger(self) -> Schedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron and interval")
        return self

    @property
    def interval_seconds(self) -> int | None:
        """The interval in seconds (None for a cron schedule)."""
        if self.interval is None:
            return None
        match = _DURATION.match(self.interval)
        assert match is not None  # checked by the validator
        return int(match.group(1)) * _UNITS[match.group(2)]

    def trigger(self) -> dict[str, Any]:
        """The trigger as the hash records it."""
        return {"cron": self.cron} if self.cron else {"interval_seconds": self.interval_seconds}


class SchedulesFile(_Strict):
    """A schedules file: the recurring runs refinery keeps in Kubeflow Pipelines."""

    removed: Literal["pause", "delete"] = Field(
        "pause", description="What happens to a recurring run refinery created that is no longer declared."
    )
    schedules: tuple[Schedule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> SchedulesFile:
        names = [s.name for s in self.schedules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"schedule names must be unique: {', '.join(twice)} declared more than once")
        return self


def _location(loc: tuple[Any, ...], tree: Any) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(loc) >= 2 and loc[0] == "schedules" and isinstance(loc[1], int):
        try:
            name = tree["schedules"][loc[1]]["name"]
            out = out.replace(f"schedules[{loc[1]}]", f"schedules[{loc[1]}] ({name})", 1)
        except (KeyError, IndexError, TypeError):
            pass
    return out or "(top level)"


def load_schedules(path: str | Path) -> SchedulesFile:
    """Read and check a schedules file.

    Raises:
        ConfigError: The file is missing or not YAML, or a key is unknown, missing or wrong; the message
            names the file and the dotted path of each problem.
    """
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"schedules file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read schedules file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping with `schedules:` at the top level")
    try:
        return SchedulesFile.model_validate(tree)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            message = (
                "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            )
            lines.append(f"  {_location(tuple(e['loc']), tree)}: {message}")
        raise ConfigError(f"invalid schedules file {path}:\n" + "\n".join(lines)) from None


# ---- what the file asks for ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """A declared schedule, compiled: what its recurring run must be."""

    schedule: Schedule
    compiled: CompiledPipeline
    experiment: str
    parameters: dict[str, Any]
    service_account: str | None = None

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def spec_hash(self) -> str:
        """The hash of everything about the recurring run that Kubeflow cannot change in place."""
        s = self.schedule
        spec = {
            "pipeline": self.compiled.name,
            "version": self.compiled.version_name,
            "trigger": s.trigger(),
            "parameters": self.parameters,
            "max_concurrency": s.max_concurrency,
            "catchup": s.catchup,
            "experiment": self.experiment,
            "description": s.description,
        }
        if self.service_account:  # kept out when unset: hashes from before the setting stay the same
            spec["service_account"] = self.service_account
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def description(self, source: str) -> str:
        lead = f"{self.schedule.description.strip()} " if self.schedule.description.strip() else ""
        return f"{lead}{KEPT_BY} -f {source}`. [refinery-schedule spec={self.spec_hash}]"


def trigger_text(cron: str | None, seconds: int | None) -> str:
    return f"cron '{cron}'" if cron else f"every {seconds} s"


@dataclass(frozen=True)
class Declared:
    """A schedules file with every schedule compiled, and the Kubeflow Pipelines API it goes to."""

    source: str
    file: SchedulesFile
    desired: tuple[Desired, ...]
    endpoint: Endpoint


def _config_path(base: Path, schedule: Schedule) -> Path:
    path = Path(schedule.config).expanduser()
    return path if path.is_absolute() else base / path


def endpoint_of(configs: list[tuple[str, RunConfig]]) -> Endpoint:
    """The one API the schedules' configurations name (the environment wins, as everywhere)."""
    if not configs:
        return endpoint(None)
    first_where, first = configs[0]
    ep = endpoint(first)
    for where, cfg in configs[1:]:
        other = endpoint(cfg)
        if (other.host, other.namespace) != (ep.host, ep.namespace):
            raise ConfigError(
                f"{where} names Kubeflow Pipelines at {other.host} (namespace {other.namespace}), {first_where}"
                f" at {ep.host} (namespace {ep.namespace}): one schedules file keeps the recurring runs of one"
                " Kubeflow Pipelines"
            )
    return ep


def _where(source: str, index: int, schedule: Schedule) -> str:
    return f"{source}: schedules[{index}] ({schedule.name})"


def read_configs(source: Path, file: SchedulesFile) -> list[tuple[str, RunConfig]]:
    configs = []
    for index, schedule in enumerate(file.schedules):
        where = _where(str(source), index, schedule)
        try:
            cfg = read_config(_config_path(source.parent, schedule), list(schedule.overrides))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        configs.append((where, cfg))
    return configs


def declared(path: str | Path) -> Declared:
    """Read a schedules file and compile each schedule's pipeline (one compilation per distinct
    pipeline, configuration and overrides).

    Raises:
        ConfigError: The file, a configuration it names, or a schedule's parameters are invalid; the
            configurations name different Kubeflow Pipelines APIs.
        KfpApiError: No API is configured.
    """
    source = Path(path)
    file = load_schedules(source)
    configs = read_configs(source, file)
    ep = endpoint_of(configs)
    compiled: dict[tuple[str, str, tuple[str, ...]], CompiledPipeline] = {}
    desired = []
    for index, (schedule, (where, cfg)) in enumerate(zip(file.schedules, configs, strict=True)):
        key = (schedule.pipeline, str(_config_path(source.parent, schedule).resolve()), schedule.overrides)
        if key not in compiled:
            compiled[key] = compile_pipeline(cfg, schedule.pipeline, source=where)
        parameters = run_parameters(
            compiled[key],
            schedule.parameters,
            source=f"{source}: schedules[{index}] ({schedule.name}).parameters",
        )
        experiment = schedule.experiment or cfg.kfp.experiment
        desired.append(Desired(schedule, compiled[key], experiment, parameters, cfg.kfp.service_account))
    return Declared(str(source), file, tuple(desired), ep)

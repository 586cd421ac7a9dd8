"""The whole configuration of one run (:class:`RunConfig`), made of the sections, and the rules that
relate settings of different sections, checked when it is loaded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from refinery.config._base import _Strict
from refinery.config.cluster import EnvironmentResources, ImagesConfig, KfpConfig, StorageConfig, pvc_problems
from refinery.config.data import DataConfig
from refinery.config.operations import MonitoringConfig, ServingConfig
from refinery.config.release import (
    EvaluationConfig,
    GateConfig,
    GitOpsConfig,
    PackagingConfig,
    RegistryConfig,
)
from refinery.config.training import HpoConfig, ModelConfig, TrainingConfig
from refinery.errors import ConfigError


class RunConfig(_Strict):
    """One run of the refinement loop.

    ``state_dir`` makes it an embedded configuration: every location left empty defaults to a file or
    folder under it (a sqlite registry, a local GitOps repository, ...). Without one (``state_dir: null``)
    it is a cluster configuration: each step shares nothing with another but its pipeline artifacts and
    the network services named here, so :func:`resolve` requires every service location to be a network
    service and no data to be a local path (see ARCHITECTURE.md, "The cluster contract").
    """

    task: Literal["text-classification"] = "text-classification"
    state_dir: str | None = Field(
        ".refinery",
        description="The embedded deployment's folder (registry, Bento store, GitOps repository, logs);"
        " null for a cluster configuration, which names a network service for each of them.",
    )
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    packaging: PackagingConfig = PackagingConfig()
    gitops: GitOpsConfig = GitOpsConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    hpo: HpoConfig = HpoConfig()
    storage: StorageConfig = StorageConfig()
    images: ImagesConfig = ImagesConfig()
    kfp: KfpConfig = Field(
        KfpConfig(), description="The Kubeflow Pipelines API runs and recurring runs are submitted to."
    )
    resources: dict[str, EnvironmentResources] = Field(
        default_factory=dict,
        description="Resource profiles per environment (the key matches gitops.environment); applied"
        " to the compiled pipeline with kfp-kubernetes.",
    )

    @model_validator(mode="after")
    def _cross_section_rules(self, info: ValidationInfo) -> RunConfig:
        # A pipeline step is given only the sections it reads (step_config): a rule relating a section
        # it was not given would judge that section's placeholder, so only rules within its sections run.
        given = (info.context or {}).get("sections")
        problems = [
            problem
            for sections, rule in CROSS_SECTION_RULES
            if given is None or set(sections) <= set(given)
            for problem in rule(self)
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def state(self) -> Path:
        """The embedded deployment's folder.

        Raises:
            ConfigError: This is a cluster configuration (``state_dir: null``).
        """
        if self.state_dir is None:
            raise ConfigError("state_dir is null (a cluster configuration): there is no local state folder")
        return Path(self.state_dir)

    @property
    def embedded(self) -> bool:
        """Whether this is an embedded configuration (it has a ``state_dir``)."""
        return self.state_dir is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return self.model_dump(mode="json")

    def sections(self) -> dict[str, dict[str, Any]]:
        """The sections this configuration holds, JSON-safe: all of them, or a step's (:func:`step_config`).

        Settings that are None are left out: kfp cannot pass a null inside a struct, and every setting
        of a section that may be None defaults to None, so :func:`step_config` reads them back the same.
        """
        return {
            name: getattr(self, name).model_dump(mode="json", exclude_none=True)
            for name in SECTIONS
            if not isinstance(getattr(self, name), _NotGiven)
        }

    def digest(self) -> str:
        """A stable hash of the whole configuration, recorded as lineage."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: The sections a pipeline step may be given (see :func:`step_config`).
SECTIONS = (
    "data",
    "model",
    "training",
    "evaluation",
    "gate",
    "registry",
    "packaging",
    "gitops",
    "serving",
    "monitoring",
    "hpo",
    "storage",
)


# What stands in for the required sections a step is not given, so that the rest validates.
_PLACEHOLDERS: dict[str, dict[str, Any]] = {
    "data": {"uri": "-", "labels": ["0", "1"]},
    "model": {"base": "-"},
}


class _NotGiven:
    """A section a pipeline step was not given: reading any of its settings is an error, never a default."""

    def __init__(self, section: str) -> None:
        self._section = section

    def __getattr__(self, name: str) -> Any:
        raise ConfigError(
            f"this pipeline step reads {self._section}.{name} but is not given the {self._section} section;"
            f" add it to the step's inputs (pipelines/training.py)"
        )


# ------------------------------------------------------------------------------ cross-section rules
# Each yields one line per problem, naming the dotted paths it relates and why they clash. They run when
# a configuration is loaded, so a mistake stops `refinery run`, `compile` or `submit` before any work,
# instead of failing later inside a pipeline step (or inside torchrun's workers).


def _batch_splits_over_processes(cfg: RunConfig) -> Iterator[str]:
    t = cfg.training
    if t.batch_size % t.processes_per_node:
        yield (
            f"training.batch_size {t.batch_size} does not split evenly over training.processes_per_node"
            f" {t.processes_per_node}: each data-parallel process takes batch_size / processes_per_node"
            " examples per step"
        )


def _searched_batches_split_over_processes(cfg: RunConfig) -> Iterator[str]:
    processes = cfg.training.processes_per_node
    uneven = [size for size in cfg.hpo.space.batch_size or () if size % processes]
    if cfg.hpo.enabled and uneven:
        yield (
            f"hpo.space.batch_size: {', '.join(map(str, uneven))} not split evenly over"
            f" training.processes_per_node {processes}, which each trial trains with"
        )


def _one_gpu_per_process(cfg: RunConfig) -> Iterator[str]:
    processes = cfg.training.processes_per_node
    for environment, resources in cfg.resources.items():
        gpus = resources.finetune.accelerator_count
        if gpus and processes > gpus:
            yield (
                f"training.processes_per_node {processes} exceeds resources.{environment}.finetune"
                f".accelerator_count {gpus}: each data-parallel process needs a GPU of its own"
            )


def _volumes_mount_where_training_writes(cfg: RunConfig) -> Iterator[str]:
    for environment, resources in cfg.resources.items():
        for step in ("finetune", "steps"):
            yield from pvc_problems(
                getattr(resources, step),
                f"resources.{environment}.{step}",
                checkpoint_dir=cfg.training.checkpoint.dir,
                model_cache_dir=cfg.model.cache_dir,
            )


def _new_rows_to_compare_on(cfg: RunConfig) -> Iterator[str]:
    significance, data = cfg.gate.significance, cfg.data
    if significance.mode != "off" and significance.on == "new" and not (data.incoming_uri or data.feedback):
        yield (
            "gate.significance.on is new, but no new labelled rows come in: set data.incoming_uri or"
            " data.feedback, or gate.significance.on to auto or all"
        )


def _window_can_fill(cfg: RunConfig) -> Iterator[str]:
    mon = cfg.monitoring
    if mon.min_window_size > mon.window_size:
        yield (
            f"monitoring.min_window_size {mon.min_window_size} exceeds monitoring.window_size"
            f" {mon.window_size}: no window would ever be large enough to judge"
        )


#: The rules relating settings of different sections (or fields far apart in one), with the sections
#: each reads.
CROSS_SECTION_RULES: tuple[tuple[tuple[str, ...], Callable[[RunConfig], Iterator[str]]], ...] = (
    (("training",), _batch_splits_over_processes),
    (("training", "hpo"), _searched_batches_split_over_processes),
    (("training", "resources"), _one_gpu_per_process),
    (("training", "model", "resources"), _volumes_mount_where_training_writes),
    (("gate", "data"), _new_rows_to_compare_on),
    (("monitoring",), _window_can_fill),
)

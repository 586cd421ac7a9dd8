"""Resource profiles, retries, caching and credentials on pipeline tasks: where a step's pod runs on the
cluster and what it gets.

A :class:`~refinery.config.ResourceProfile` from the run configuration becomes kfp task settings
(accelerator, CPU and memory) in the pipeline IR and kfp-kubernetes settings (node selector,
tolerations, volumes, secrets) in the ``platforms.kubernetes`` document of the compiled YAML. An empty
profile applies nothing, so kfp.local runs (which ignore these settings anyway) are unaffected.

:data:`STEP_SERVICES` says which network services each step calls. It decides which steps get a retry
policy (every one that calls a service) and which Secrets each step's pod gets (those of its services
only, from ``resources.<environment>.credentials``).
"""

# No `from __future__ import annotations` in pipelines/: KFP reads annotations as types.

import re
from typing import Any

from kfp import kubernetes

from refinery.config import EnvironmentResources, ResourceProfile, RetryPolicy, RunConfig, pvc_problems
from refinery.credentials import SERVICES
from refinery.errors import ConfigError

#: The network services each step (by component name) calls: the registry (MLflow), the object store
#: (data, registry artifacts, Bentos), the GitOps remote, the container registry.
STEP_SERVICES: dict[str, tuple[str, ...]] = {
    "resolve-config": ("object_store", "inference_log"),
    "validate-data": ("object_store", "inference_log"),
    "prepare-data": ("object_store", "inference_log"),
    "finetune": ("registry", "object_store"),
    "finetune-trial": ("registry", "object_store"),
    "suggest-trials": (),
    "merge-round": (),
    "evaluate": ("registry", "object_store"),
    "gate": (),
    "register": ("registry", "object_store"),
    "package": ("registry", "object_store"),
    # Fetches the packaged Bento from the store and serves it on loopback, with a scratch inference log.
    "check-serving": ("object_store",),
    "promote": ("registry", "object_store", "git", "container_registry"),
    # The monitoring pipeline's one step: the inference and trigger logs, the champion's reference
    # statistics and model in the registry, the GitOps branch whose merged overlays move the aliases, and
    # the Kubeflow Pipelines API it starts a retraining run through.
    "monitor": ("registry", "object_store", "inference_log", "git", "pipelines"),
}
#: Steps never served from kfp's cache: their result depends on more than their inputs (the config file
#: a URI names, the current champion, the inference log) or they change the services (register, package,
#: promote, monitor), or it measures the node it runs on (check-serving).
UNCACHED = frozenset(
    {"resolve-config", "evaluate", "register", "package", "check-serving", "promote", "monitor"}
)
#: Steps with a retry policy of their own (fine-tuning resumes from checkpoints).
FINETUNE_STEPS = frozenset({"finetune", "finetune-trial"})

# The memory-backed /dev/shm: PyTorch DataLoader workers and NCCL pass tensors through shared memory,
# and a container's default /dev/shm is 64Mi.
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"

# A preempted GPU node takes minutes to come back (or the autoscaler to find another), so retries wait
# 1, 2, 4, ... minutes. Argo counts the backoff's maximum duration from the start of the first attempt,
# so it must also cover the training time before a preemption, not only the waits.
RETRY_BACKOFF = "60s"
RETRY_BACKOFF_FACTOR = 2.0
RETRY_MAX_DURATION = "24h"

# Kubernetes quantities, as kfp validates them for cpu and memory (shm_size is a memory quantity).
_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


def environment_resources(
    cfg: RunConfig, environment: str | None = None, source: str = "the configuration"
) -> tuple[str, EnvironmentResources]:
    """The resource profiles of ``environment`` (default: ``gitops.environment``), checked.

    A configuration without any ``resources`` gives empty profiles for its own environment, so a
    pipeline compiled from it carries no cluster settings except the finetune retry policy.

    Raises:
        ConfigError: The environment has no entry under ``resources`` (named explicitly, or the config
            declares resources for other environments), or one of its profiles is inconsistent.
    """
    name = environment or cfg.gitops.environment
    if name not in cfg.resources:
        if not cfg.resources and environment is None:
            return name, EnvironmentResources()
        known = ", ".join(sorted(cfg.resources)) or "none"
        raise ConfigError(
            f"{source}: no resources for environment {name!r} (resources.{name}); known environments: {known}"
        )
    resources = cfg.resources[name]
    checkpoint_dir = cfg.training.checkpoint.dir
    model_cache_dir = cfg.model.cache_dir
    for step in ("finetune", "steps"):
        check_profile(
            getattr(resources, step),
            f"{source}: resources.{name}.{step}",
            checkpoint_dir=checkpoint_dir,
            model_cache_dir=model_cache_dir,
        )
    return name, resources


def check_profile(
    profile: ResourceProfile,
    where: str = "resource profile",
    *,
    checkpoint_dir: str | None = None,
    model_cache_dir: str | None = None,
) -> None:
    """Reject a profile Kubernetes would reject at run time, or that would not do what it says.

    Raises:
        ConfigError: naming ``where`` and the field at fault.
    """
    if profile.accelerator_count and not profile.accelerator_type:
        raise ConfigError(
            f"{where}.accelerator_count is {profile.accelerator_count} but accelerator_type is empty"
            " (e.g. nvidia.com/gpu)"
        )
    if profile.accelerator_type and not profile.accelerator_count:
        raise ConfigError(
            f"{where}.accelerator_type {profile.accelerator_type!r} needs accelerator_count >= 1"
        )
    for field, pattern, example in (
        ("cpu_request", _CPU, "2 or 500m"),
        ("cpu_limit", _CPU, "2 or 500m"),
        ("memory_request", _MEMORY, "16Gi"),
        ("memory_limit", _MEMORY, "16Gi"),
        ("shm_size", _MEMORY, "8Gi"),
    ):
        value = getattr(profile, field)
        if value is not None and not pattern.match(value):
            raise ConfigError(f"{where}.{field}: {value!r} is not a Kubernetes quantity (e.g. {example})")
    for problem in pvc_problems(
        profile, where, checkpoint_dir=checkpoint_dir, model_cache_dir=model_cache_dir
    ):
        raise ConfigError(problem)
    envs = [s.env for s in profile.secrets]
    doubled = sorted({e for e in envs if envs.count(e) > 1})
    if doubled:
        raise ConfigError(f"{where}.secrets sets {', '.join(doubled)} more than once")


def apply_profile(
    task: Any,
    profile: ResourceProfile,
    *,
    checkpoint_dir: str | None = None,
    model_cache_dir: str | None = None,
) -> Any:
    """Apply ``profile`` to a pipeline task; an empty profile leaves the task as it is.

    Args:
        task: A kfp PipelineTask.
        profile: Node selector, tolerations, accelerator, CPU and memory, /dev/shm size, PVCs, secrets.
        checkpoint_dir: Mount path of ``profile.checkpoint_pvc`` (``training.checkpoint.dir``).
        model_cache_dir: Mount path of ``profile.model_cache_pvc`` (``model.cache_dir``).

    Returns:
        The task, for chaining.

    Raises:
        ConfigError: The profile is inconsistent (see :func:`check_profile`).
    """
    check_profile(profile, checkpoint_dir=checkpoint_dir, model_cache_dir=model_cache_dir)
    _place(task, profile)
    _size(task, profile)
    _mount(task, profile, checkpoint_dir=checkpoint_dir, model_cache_dir=model_cache_dir)
    _secrets(task, profile)
    return task


def _place(task: Any, profile: ResourceProfile) -> None:
    """Where the pod may run: node selector, tolerations."""
    for key, value in profile.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in profile.tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )


def _size(task: Any, profile: ResourceProfile) -> None:
    """What the pod gets: accelerators, CPU and memory."""
    if profile.accelerator_type:
        task.set_accelerator_type(profile.accelerator_type)
        task.set_accelerator_limit(profile.accelerator_count)
    for value, setter in (
        (profile.cpu_request, task.set_cpu_request),
        (profile.cpu_limit, task.set_cpu_limit),
        (profile.memory_request, task.set_memory_request),
        (profile.memory_limit, task.set_memory_limit),
    ):
        if value:
            setter(value)


def _mount(
    task: Any, profile: ResourceProfile, *, checkpoint_dir: str | None, model_cache_dir: str | None
) -> None:
    """The pod's volumes: a memory-backed /dev/shm, the checkpoint and model-cache PVCs."""
    if profile.shm_size:
        kubernetes.empty_dir_mount(
            task, volume_name=SHM_VOLUME, mount_path=SHM_PATH, medium="Memory", size_limit=profile.shm_size
        )
    for pvc, mount_path in (
        (profile.checkpoint_pvc, checkpoint_dir),
        (profile.model_cache_pvc, model_cache_dir),
    ):
        if pvc and mount_path:
            kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=mount_path)


def _secrets(task: Any, profile: ResourceProfile) -> None:
    """The profile's secrets as environment variables."""
    # One secretAsEnv entry per secret; a key read into two variables needs a second entry.
    reads: list[tuple[str, dict[str, str]]] = []
    for secret in profile.secrets:
        keys = next((k for name, k in reads if name == secret.secret and secret.key not in k), None)
        if keys is None:
            keys = {}
            reads.append((secret.secret, keys))
        keys[secret.key] = secret.env
    for name, key_to_env in reads:
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=key_to_env)


def step_name(task: Any) -> str:
    """The component name of a pipeline task (``finetune-trial`` for every trial task)."""
    return str(task.component_spec.name)


def apply_run_settings(tasks: list[Any], env: dict[str, str], resources: EnvironmentResources | None) -> None:
    """What every task gets whatever the profiles: caching off where :data:`UNCACHED` says, ``env`` (the
    storage endpoint and region); and with ``resources``, the network retry policy on each step that
    calls a service, the Secrets of exactly those services, and the image pull secret.

    Raises:
        ConfigError: A task's step is missing from :data:`STEP_SERVICES`.
    """
    for task in tasks:
        name = step_name(task)
        if name not in STEP_SERVICES:
            raise ConfigError(f"step {name!r} is not listed in pipelines.resources.STEP_SERVICES")
        if name in UNCACHED:
            task.set_caching_options(False)
        for key, value in env.items():
            task.set_env_variable(key, value)
        if resources is not None:
            _service_settings(task, name, resources)


def _service_settings(task: Any, name: str, resources: EnvironmentResources) -> None:
    """The network retry policy of a step that calls a service, the Secrets of exactly its services,
    and the image pull secret."""
    services = STEP_SERVICES[name]
    if services and name not in FINETUNE_STEPS:
        set_retry(task, resources.network_retries)
    credentials = resources.credentials
    for service in services:
        secret = getattr(credentials, service)
        if not secret:
            continue
        wanted = SERVICES[service]
        if wanted.required:
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=_same(wanted.required))
        if wanted.optional:
            kubernetes.use_secret_as_env(
                task, secret_name=secret, secret_key_to_env=_same(wanted.optional), optional=True
            )
    if credentials.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [credentials.image_pull_secret])


def _same(names: tuple[str, ...]) -> dict[str, str]:
    # A Secret's keys are the variable names (refinery.credentials), so each key maps to itself.
    return {name: name for name in names}


def set_retry(task: Any, policy: RetryPolicy) -> Any:
    """Retry a failed task as ``policy`` says (count 0: no retry policy)."""
    if policy.count:
        task.set_retry(
            num_retries=policy.count,
            backoff_duration=f"{policy.backoff_seconds}s",
            backoff_factor=policy.factor,
            backoff_max_duration=f"{policy.max_seconds}s",
        )
    return task


def set_finetune_retry(task: Any, retries: int) -> Any:
    """Retry a failed or preempted fine-tuning task ``retries`` times (0: no retry policy)."""
    if retries:
        task.set_retry(
            num_retries=retries,
            backoff_duration=RETRY_BACKOFF,
            backoff_factor=RETRY_BACKOFF_FACTOR,
            backoff_max_duration=RETRY_MAX_DURATION,
        )
    return task

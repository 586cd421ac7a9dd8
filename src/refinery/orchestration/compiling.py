"""Compiling one of refinery's pipelines for a Kubeflow cluster.

This is the one place a cluster configuration becomes pipeline IR: ``refinery compile`` writes it to a
file, ``refinery submit`` and the drift monitor upload it and start a run, ``refinery schedules`` pins it
in recurring runs. The pipeline is picked by name from :data:`PIPELINES`; the configuration is checked
the way its steps will check it, the resource profiles of its environment are applied, and the images
are this version's in ``images.registry`` unless named.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from refinery.config import EnvironmentResources, RunConfig, resolve
from refinery.errors import ConfigError
from refinery.version import Images, image_tag

#: The pipelines by name: the module and the builder ``(cfg, images, resources) -> pipeline`` in it.
#: A new pipeline is one line here.
PIPELINES: dict[str, str] = {
    "training": "pipelines.training:build_training_pipeline",
    "monitoring": "pipelines.monitoring:build_monitoring_pipeline",
}


@dataclass(frozen=True)
class CompiledPipeline:
    """A pipeline compiled for a cluster.

    Attributes:
        pipeline: Its name in :data:`PIPELINES` (``training``).
        name: The name the IR gives it (``refinery-training``): the Kubeflow pipeline it is a version of.
        text: The IR YAML, as ``refinery compile`` writes it.
        version_name: The pipeline version it is uploaded as: this refinery's image tag and a hash of
            ``text`` (``<version>-<sha12>-<hash12>``), so that the same configuration, compiled by the
            same refinery, names the same version.
        images: The images its steps run on.
        environment: The environment whose resource profiles it carries.
        resources: Those profiles, retry policies and credentials.
        profiles: Whether the configuration has profiles for ``environment`` (else none are applied).
    """

    pipeline: str
    name: str
    text: str
    version_name: str
    images: Images
    environment: str
    resources: EnvironmentResources
    profiles: bool

    @property
    def digest(self) -> str:
        """The hash of the IR that ``version_name`` ends with."""
        return self.version_name.rsplit("-", 1)[-1]

    @functools.cached_property
    def _inputs(self) -> dict[str, Any]:
        spec = next(yaml.safe_load_all(self.text))
        parameters: dict[str, Any] = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        return parameters

    def parameter_types(self) -> dict[str, str]:
        """The run form's parameters and their IR types (``STRING``, ``NUMBER_DOUBLE``, ...)."""
        return {name: str(spec.get("parameterType", "STRING")) for name, spec in self._inputs.items()}

    def defaults(self) -> dict[str, Any]:
        """The run form's parameters with the defaults compiled from the configuration."""
        return {name: spec["defaultValue"] for name, spec in self._inputs.items() if "defaultValue" in spec}

    def write(self, path: Path) -> None:
        """Write the IR YAML to ``path`` (its folder is created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text, encoding="utf-8")


def _builder(pipeline: str) -> Callable[..., Any]:
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")
    module_name, _, function = PIPELINES[pipeline].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(
            f"the {pipeline} pipeline is not part of this refinery ({module_name} is missing)"
        ) from None
    builder: Callable[..., Any] = getattr(module, function)
    return builder


def require_cluster(cfg: RunConfig, source: str = "the configuration") -> None:
    """Refuse an embedded configuration: its pipelines cannot run on a cluster.

    Raises:
        ConfigError: ``cfg`` has a ``state_dir``.
    """
    if cfg.embedded:
        raise ConfigError(
            f"{source} is an embedded configuration (state_dir {cfg.state_dir}): its registry, Bento"
            " store and GitOps repository are files on this machine, which no pod can reach. Use a"
            " cluster configuration (state_dir: null, every service named), e.g. configs/prod.yaml"
        )


def compile_pipeline(
    cfg: RunConfig,
    pipeline: str = "training",
    *,
    environment: str | None = None,
    image: str | None = None,
    gpu_image: str | None = None,
    source: str = "the configuration",
) -> CompiledPipeline:
    """Compile ``pipeline`` for a cluster from ``cfg``.

    Args:
        cfg: A cluster configuration as written (``read_config``), not resolved: its paths resolve where
            the steps run, and no path of this machine may reach the pipeline.
        pipeline: A name in :data:`PIPELINES`.
        environment: Whose entry of ``resources`` applies (default: ``gitops.environment``).
        image: The project image for every step (default: this version's in ``images.registry``).
        gpu_image: The image fine-tuning runs on (default: this version's GPU image there).
        source: What errors call the configuration (its file name).

    Raises:
        ConfigError: The pipeline is unknown; ``cfg`` is an embedded configuration, names a local path
            where a pod needs a network service, or has no or an inconsistent resource profile for the
            environment; an image would come from podman's local storage.
    """
    from kfp import compiler
    from pipelines.resources import environment_resources

    build = _builder(pipeline)
    require_cluster(cfg, source)
    # The pipeline carries the configuration as written; resolving it here checks it as the steps will.
    resolve(cfg)
    env, resources = environment_resources(cfg, environment, source=source)
    default = Images.default(registry=cfg.images.registry)
    images = Images(project=image or default.project, gpu=gpu_image or default.gpu)
    if images.local():
        raise ConfigError(
            f"{', '.join(images.local())} would be pulled from podman's local storage (localhost/), which a"
            " cluster cannot reach: name the registry with --registry or images.registry"
        )
    built = build(cfg, images, resources)
    with tempfile.TemporaryDirectory(prefix="refinery-compile-") as folder:
        out = Path(folder) / "pipeline.yaml"
        compiler.Compiler().compile(built, str(out))
        text = out.read_text(encoding="utf-8")
    name = str(next(yaml.safe_load_all(text))["pipelineInfo"]["name"])
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return CompiledPipeline(
        pipeline=pipeline,
        name=name,
        text=text,
        version_name=f"{image_tag()}-{digest}",
        images=images,
        environment=env,
        resources=resources,
        profiles=env in cfg.resources,
    )

"""The monitoring pipeline: one step, ``refinery monitor`` against the cluster's inference log.

Scheduled as a recurring run (configs/schedules.yaml), it checks the serving model's newest predictions
for drift on every run and, when the trigger policy fires, starts the training pipeline through the
Kubeflow Pipelines API: a normal run in the Kubeflow UI, on the pipeline version ``refinery submit``
would use for the same configuration. The trigger log's claim keeps the cooldown and stops two monitors
from starting two retrains. The run shows the decision as Markdown and the drift report as HTML.
"""
# No `from __future__ import annotations` here: KFP reads the annotations as types.

from typing import Any

import components
from kfp import dsl

from pipelines.resources import apply_profile, apply_run_settings
from refinery.config import EnvironmentResources, RunConfig, config_as_written
from refinery.version import Images

PIPELINE_NAME = "refinery-monitoring"


def build_monitoring_pipeline(
    cfg: RunConfig, images: Images | None = None, resources: EnvironmentResources | None = None
) -> Any:
    """The monitoring pipeline for ``cfg``, its step on the project image and, for a cluster, on the
    ``steps`` profile of ``resources`` with the Secrets of the services it calls.

    Its one parameter, ``config``, defaults to the whole of ``cfg`` as written (compile-time sections
    included: the step compiles the training pipeline from it when drift fires); a URI of a YAML file
    works too.
    """
    ops = components.build(images or Images.default(registry=cfg.images.registry))

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Check the serving model's predictions for drift; on drift, start a training run.",
    )
    def monitoring_pipeline(config: str = config_as_written(cfg)):
        """One check of the serving model's window; ``config`` is the whole configuration (JSON or YAML,
        or a URI of a YAML file)."""
        checked = ops.monitor(config=config)
        apply_run_settings([checked], cfg.storage.env(), resources)
        if resources is not None:
            apply_profile(checked, resources.steps)

    return monitoring_pipeline

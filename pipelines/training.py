"""The training pipeline: validate -> prepare -> finetune -> evaluate -> gate -> (register, package, promote, champion)."""
# No `from __future__ import annotations` here or in components/: KFP reads the annotations as types.

from typing import Any

import components
from kfp import dsl

from pipelines.resources import apply_profile, set_finetune_retry
from refinery.config import EnvironmentResources
from refinery.version import Images

PIPELINE_NAME = "refinery-training"


def build_training_pipeline(
    images: Images | None = None,
    resources: EnvironmentResources | None = None,
    *,
    checkpoint_dir: str | None = None,
    model_cache_dir: str | None = None,
) -> Any:
    """The pipeline with its steps on ``images`` and, for a cluster, on ``resources``.

    Args:
        images: The project and GPU images (default: this version's).
        resources: One environment's resource profiles: ``finetune`` for the fine-tuning task,
            ``steps`` for every other task, and the finetune retry policy. None (kfp.local runs) sets
            nothing, not even retries: kfp.local honours them, and a local failure is no preemption.
        checkpoint_dir: Where the checkpoint PVC is mounted (the config's ``training.checkpoint.dir``).
        model_cache_dir: Where the model cache PVC is mounted (the config's ``model.cache_dir``).

    Raises:
        ConfigError: A profile is inconsistent (e.g. a PVC without an absolute mount path).
    """
    ops = components.build(images or Images.default())
    mounts = {"checkpoint_dir": checkpoint_dir, "model_cache_dir": model_cache_dir}

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate labelled data, fine-tune, gate against the champion, then register, package and promote.",
    )
    def training_pipeline(config: str):
        """One pass of the refinement loop; ``config`` is a resolved refinery RunConfig as JSON."""
        validated = ops.validate_data(config=config)
        prepared = ops.prepare_data(config=config).after(validated)
        trained = ops.finetune(config=config, dataset=prepared.outputs["dataset"])
        evaluated = ops.evaluate(
            config=config, dataset=prepared.outputs["dataset"], model=trained.outputs["model"]
        )
        decided = ops.gate(config=config, evaluation=evaluated.outputs["evaluation"])
        with dsl.If(decided.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            registered = ops.register(
                config=config,
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                model=trained.outputs["model"],
                dataset=prepared.outputs["dataset"],
                evaluation=evaluated.outputs["evaluation"],
            )
            version = registered.outputs["Output"]
            packaged = ops.package(config=config, version=version)
            promoted = ops.promote(config=config, version=version, bento_tag=packaged.outputs["Output"])
            # The champion alias moves last, after the version is registered, packaged and committed.
            championed = ops.set_champion(
                config=config,
                version=version,
                bento_tag=packaged.outputs["Output"],
                commit=promoted.outputs["Output"],
            )

        if resources is not None:
            # Fine-tuning on the GPU profile, retried after a failure or a preemption (its checkpoints
            # are on the checkpoint PVC); every other step on the CPU profile.
            apply_profile(trained, resources.finetune, **mounts)
            set_finetune_retry(trained, resources.finetune_retries)
            for task in (validated, prepared, evaluated, decided, registered, packaged, promoted, championed):
                apply_profile(task, resources.steps, **mounts)

    return training_pipeline

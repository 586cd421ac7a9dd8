"""The training pipeline: validate -> prepare -> finetune -> evaluate -> gate -> (register, package, promote, champion)."""
# No `from __future__ import annotations` here or in components/: KFP reads the annotations as types.

from typing import Any

import components
from kfp import dsl

from refinery.version import Images

PIPELINE_NAME = "refinery-training"


def build_training_pipeline(images: Images | None = None) -> Any:
    """The pipeline with its steps on ``images`` (default: this version's project and GPU images)."""
    ops = components.build(images or Images.default())

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
            ops.set_champion(
                config=config,
                version=version,
                bento_tag=packaged.outputs["Output"],
                commit=promoted.outputs["Output"],
            )

    return training_pipeline

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def register(
    data_config: dict,
    model_config: dict,
    training_config: dict,
    gate_config: dict,
    registry_config: dict,
    config_sha: str,
    run_id: str,
    model: Input[Model],
    dataset: Input[Dataset],
    evaluation: Input[Artifact],
    validation: Input[Artifact],
    decision: Input[Artifact],
    registration: Output[Artifact],
) -> str:
    """Register the challenger with lineage tags and its model card; returns the new version (a retry
    returns the version this run registered)."""
    from refinery.config import step_config
    from refinery.orchestration import steps

    cfg = step_config(
        data=data_config,
        model=model_config,
        training=training_config,
        gate=gate_config,
        registry=registry_config,
    )
    return steps.register(
        cfg,
        model_dir=model.path,
        data_dir=dataset.path,
        evaluation_dir=evaluation.path,
        run_id=run_id,
        out_dir=registration.path,
        validation_dir=validation.path,
        decision_dir=decision.path,
        config_sha=config_sha,
    ).version

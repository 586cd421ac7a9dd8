from kfp.dsl import Artifact, Dataset, Input, Model, Output


def register(
    config: str,
    run_id: str,
    model: Input[Model],
    dataset: Input[Dataset],
    evaluation: Input[Artifact],
    validation: Input[Artifact],
    decision: Input[Artifact],
    registration: Output[Artifact],
) -> str:
    """Register the challenger with lineage tags and its model card; returns the new version."""
    from refinery.orchestration import steps

    return steps.register(
        config,
        model_dir=model.path,
        data_dir=dataset.path,
        evaluation_dir=evaluation.path,
        run_id=run_id,
        out_dir=registration.path,
        validation_dir=validation.path,
        decision_dir=decision.path,
    ).version

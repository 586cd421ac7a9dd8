from kfp.dsl import Dataset, Input, Metrics, Model, Output


def finetune(
    data_config: dict,
    model_config: dict,
    training_config: dict,
    registry_config: dict,
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    run_key: str = "",
):
    """Fine-tune the base model; writes safetensors weights, tokenizer and training.json.

    ``run_key`` (the pipeline run) names the checkpoints: a retried task resumes from them. The registry
    section is the tracking server the training is logged to.
    """
    from refinery.config import step_config
    from refinery.orchestration import steps

    cfg = step_config(
        data=data_config, model=model_config, training=training_config, registry=registry_config
    )
    result = steps.finetune(cfg, data_dir=dataset.path, out_dir=model.path, run_key=run_key)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)

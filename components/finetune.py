from kfp.dsl import Dataset, Input, Metrics, Model, Output


def finetune(
    config: str, dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics], run_key: str = ""
):
    """Fine-tune the base model; writes safetensors weights, tokenizer and training.json.

    ``run_key`` (the pipeline run) names the checkpoints: a retried task resumes from them.
    """
    from refinery.orchestration import steps

    result = steps.finetune(config, data_dir=dataset.path, out_dir=model.path, run_key=run_key)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)

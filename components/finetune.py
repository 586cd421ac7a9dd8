from kfp.dsl import Dataset, Input, Metrics, Model, Output


def finetune(config: str, dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Fine-tune the base model; writes safetensors weights, tokenizer and training.json."""
    from refinery.orchestration import steps

    result = steps.finetune(config, data_dir=dataset.path, out_dir=model.path)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)

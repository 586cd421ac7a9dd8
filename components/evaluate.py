from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    config: str,
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
):
    """Challenger and current champion on the same test set."""
    from refinery.orchestration import steps

    result = steps.evaluate(config, data_dir=dataset.path, model_dir=model.path, out_dir=evaluation.path)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    confusion_matrix.log_confusion_matrix(list(result.labels), result.challenger.confusion_matrix)

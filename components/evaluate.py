from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    data_config: dict,
    model_config: dict,
    training_config: dict,
    evaluation_config: dict,
    gate_config: dict,
    registry_config: dict,
    environment: str,
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    predictions: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
):
    """Challenger and the current champion of ``environment`` (the run's gitops.environment, from the
    registry) on the same test set: metrics, plots, predictions of both."""
    import pandas as pd

    from refinery.config import step_config
    from refinery.evaluation.evaluate import roc_points
    from refinery.orchestration import steps

    cfg = step_config(
        data=data_config,
        model=model_config,
        training=training_config,
        evaluation=evaluation_config,
        gate=gate_config,
        registry=registry_config,
    )
    result = steps.evaluate(
        cfg,
        data_dir=dataset.path,
        model_dir=model.path,
        out_dir=evaluation.path,
        predictions_path=predictions.path,
        report_path=report.path,
        environment=environment,
    )
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    classification.log_confusion_matrix(list(result.labels), result.challenger.confusion_matrix)
    roc = roc_points(result.labels, pd.read_parquet(predictions.path))
    if roc is not None:
        classification.log_roc_curve(*roc)

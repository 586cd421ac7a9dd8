from kfp.dsl import Dataset, Metrics, Output


def prepare_data(
    data_config: dict,
    serving_config: dict,
    data_fingerprint: str,
    feedback_through: int,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
):
    """Assemble the base data, the new labelled rows and a replay share; clean, deduplicate, split. The
    dataset folder also holds the drift reference profile and the lineage of every source."""
    from refinery.config import step_config
    from refinery.orchestration import steps

    prepared = steps.prepare(
        step_config(data=data_config, serving=serving_config),
        out_dir=dataset.path,
        data_fingerprint=data_fingerprint,
        feedback_through=feedback_through,
    )
    for name, value in prepared.metrics().items():
        metrics.log_metric(name, value)

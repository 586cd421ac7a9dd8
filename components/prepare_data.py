from kfp.dsl import Dataset, Metrics, Output


def prepare_data(
    data_config: dict, data_fingerprint: str, dataset: Output[Dataset], metrics: Output[Metrics]
):
    """Clean, deduplicate, split; the dataset folder also holds the drift reference profile."""
    from refinery.config import step_config
    from refinery.orchestration import steps

    prepared = steps.prepare(
        step_config(data=data_config), out_dir=dataset.path, data_fingerprint=data_fingerprint
    )
    for name, value in prepared.metrics().items():
        metrics.log_metric(name, value)

from kfp.dsl import Dataset, Metrics, Output


def prepare_data(config: str, dataset: Output[Dataset], metrics: Output[Metrics]):
    """Clean, deduplicate, split; the dataset folder also holds the drift reference profile."""
    from refinery.orchestration import steps

    prepared = steps.prepare(config, out_dir=dataset.path)
    for name, value in prepared.metrics().items():
        metrics.log_metric(name, value)

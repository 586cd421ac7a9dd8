from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Output


def package(
    data_config: dict,
    model_config: dict,
    registry_config: dict,
    packaging_config: dict,
    version: str,
    dataset: Input[Dataset],
    bento: Output[Artifact],
) -> NamedTuple("Bento", [("bento_tag", str), ("bento_uri", str), ("bento_sha256", str)]):  # type: ignore[valid-type]
    """Build the registered version's Bento and publish it to the Bento store; returns where it is."""
    from collections import namedtuple

    from refinery.config import step_config
    from refinery.orchestration import steps

    cfg = step_config(
        data=data_config, model=model_config, registry=registry_config, packaging=packaging_config
    )
    result = steps.package(cfg, version=version, out_dir=bento.path, data_dir=dataset.path)
    fields = ["bento_tag", "bento_uri", "bento_sha256"]
    return namedtuple("Bento", fields)(*(getattr(result, name) for name in fields))

from kfp.dsl import Artifact, Output


def package(config: str, version: str, bento: Output[Artifact]) -> str:
    """Build the Bento for a registered version; returns the bento tag."""
    from refinery.orchestration import steps

    return steps.package(config, version=version, out_dir=bento.path).bento_tag

from kfp.dsl import Artifact, Output


def set_champion(config: str, version: str, bento_tag: str, commit: str, champion: Output[Artifact]):
    """Move the champion alias, last: only after register, package and promote succeeded."""
    from refinery.orchestration import steps

    steps.set_champion(config, version=version, bento_tag=bento_tag, commit=commit, out_dir=champion.path)

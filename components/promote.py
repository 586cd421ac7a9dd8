from kfp.dsl import Artifact, Output


def promote(config: str, version: str, bento_tag: str, promotion: Output[Artifact]) -> str:
    """Commit the release to the GitOps overlay, then move the champion alias; returns the commit sha."""
    from refinery.orchestration import steps

    return steps.promote(config, version=version, bento_tag=bento_tag, out_dir=promotion.path).commit

from kfp.dsl import Artifact, Output


def promote(
    registry_config: dict,
    gitops_config: dict,
    version: str,
    bento_tag: str,
    bento_uri: str,
    bento_sha256: str,
    image: str,
    promotion: Output[Artifact],
) -> str:
    """Commit the release (the Bento, and ``image`` pinned by digest) to the GitOps overlay of
    ``gitops_config``'s environment, then move its ``champion-<environment>`` alias; for a protected
    environment, push a review branch instead and leave the alias; returns the commit sha."""
    from refinery.config import step_config
    from refinery.orchestration import steps
    from refinery.packaging.bento import PackageResult

    cfg = step_config(registry=registry_config, gitops=gitops_config)
    bento = PackageResult(bento_tag, "", bento_uri, bento_sha256)
    return steps.promote(cfg, version=version, bento=bento, image=image, out_dir=promotion.path).commit

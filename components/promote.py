from kfp import dsl
from kfp.dsl import Artifact, Output

from components.images import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def promote(config: str, version: str, bento_tag: str, promotion: Output[Artifact]) -> str:
    """Commit the release to the GitOps overlay; returns the commit sha."""
    from refinery.orchestration import steps

    return steps.promote(config, version=version, bento_tag=bento_tag, out_dir=promotion.path).commit

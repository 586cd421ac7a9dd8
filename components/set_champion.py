from kfp import dsl
from kfp.dsl import Artifact, Output

from components.images import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def set_champion(config: str, version: str, bento_tag: str, commit: str, champion: Output[Artifact]):
    """Move the champion alias, last: only after register, package and promote succeeded."""
    from refinery.orchestration import steps

    steps.set_champion(config, version=version, bento_tag=bento_tag, commit=commit, out_dir=champion.path)

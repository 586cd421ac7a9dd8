from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.images import PROJECT_IMAGE


@dsl.component(base_image=PROJECT_IMAGE, install_kfp_package=False)
def gate(
    config: str, evaluation: Input[Artifact], decision: Output[Artifact], report: Output[Markdown]
) -> bool:
    """The promotion decision; the pipeline's dsl.If reads the returned flag."""
    from refinery.orchestration import steps

    return steps.gate(
        config, evaluation_dir=evaluation.path, out_dir=decision.path, report_path=report.path
    ).passed

from kfp.dsl import Artifact, Input, Markdown, Output


def gate(
    config: str, evaluation: Input[Artifact], decision: Output[Artifact], report: Output[Markdown]
) -> bool:
    """The promotion decision; the pipeline's dsl.If reads the returned flag."""
    from refinery.orchestration import steps

    return steps.gate(
        config, evaluation_dir=evaluation.path, out_dir=decision.path, report_path=report.path
    ).passed

from kfp.dsl import Artifact, Input, Markdown, Output


def gate(
    gate_config: dict, evaluation: Input[Artifact], decision: Output[Artifact], report: Output[Markdown]
) -> bool:
    """The promotion decision; the pipeline's dsl.If reads the returned flag."""
    from refinery.config import step_config
    from refinery.orchestration import steps

    cfg = step_config(gate=gate_config)
    return steps.gate(
        cfg, evaluation_dir=evaluation.path, out_dir=decision.path, report_path=report.path
    ).passed

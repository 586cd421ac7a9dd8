from kfp.dsl import Artifact, Markdown, Output


def validate_data(config: str, validation: Output[Artifact], report: Output[Markdown]):
    """Great Expectations suite over the labelled data; fails the run when an expectation fails."""
    from refinery.orchestration import steps

    steps.validate(config, out_dir=validation.path, report_path=report.path)

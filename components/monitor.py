from kfp.dsl import HTML, Artifact, Markdown, Output


def monitor(
    config: str, details: Output[Artifact], decision: Output[Markdown], drift_report: Output[HTML]
) -> str:
    """Check the serving model's newest predictions for drift and, when the trigger policy fires, start
    a training run through the Kubeflow Pipelines API; returns the decision's action (e.g. ``fired``)."""
    from refinery.orchestration import steps

    return steps.monitor(
        config, out_dir=details.path, decision_md=decision.path, report_html=drift_report.path
    ).action

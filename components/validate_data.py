from kfp.dsl import HTML, Artifact, Markdown, Output


def validate_data(
    data_config: dict,
    serving_config: dict,
    data_fingerprint: str,
    feedback_through: int,
    validation: Output[Artifact],
    report: Output[Markdown],
    report_html: Output[HTML],
):
    """The data contract (Great Expectations) over the labelled data, the new labelled rows (incoming
    files, service feedback through ``feedback_through``) included; an error-severity failure stops the run.

    Outputs: the GX result, Data Docs and reports (validation), the Markdown summary (report) and the
    self-contained HTML page (report_html), both shown in the Kubeflow UI.
    """
    from refinery.config import step_config
    from refinery.orchestration import steps

    steps.validate(
        step_config(data=data_config, serving=serving_config),
        out_dir=validation.path,
        markdown_path=report.path,
        html_path=report_html.path,
        data_fingerprint=data_fingerprint,
        feedback_through=feedback_through,
    )

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output


def check_serving(
    model_config: dict,
    serving_config: dict,
    gate_config: dict,
    bento_tag: str,
    bento_uri: str,
    bento_sha256: str,
    dataset: Input[Dataset],
    check: Output[Artifact],
    report: Output[Markdown],
) -> bool:
    """Serve the packaged Bento as production does, load it, and judge it by gate.max.serving_*; the
    pipeline's dsl.If promotes only when this returns True."""
    from refinery.config import step_config
    from refinery.orchestration import steps
    from refinery.packaging.bento import PackageResult

    cfg = step_config(model=model_config, serving=serving_config, gate=gate_config)
    bento = PackageResult(bento_tag, "", bento_uri, bento_sha256)
    return steps.check_serving(cfg, bento, data_dir=dataset.path, out_dir=check.path, report_path=report.path)

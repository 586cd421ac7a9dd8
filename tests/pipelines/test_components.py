"""Component bodies called through KFP's python_func with artifacts under tmp_path (no pipeline run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import components
import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, Markdown
from tests.conftest import config_in

from refinery.errors import DataValidationError
from refinery.version import Images


def _artifacts(tmp_path: Path) -> dict[str, object]:
    return {
        "validation": Artifact(uri=str(tmp_path / "validation"), name="validation"),
        "report": Markdown(uri=str(tmp_path / "report.md"), name="report"),
        "report_html": HTML(uri=str(tmp_path / "report.html"), name="report_html"),
    }


def test_validate_data_component_writes_reports_then_stops_on_errors(
    tmp_path: Path, demo_df: pd.DataFrame
) -> None:
    op = components.build(Images(project="p", gpu="g")).validate_data
    for folder in ("good", "bad"):
        (tmp_path / folder).mkdir()
    good = config_in(tmp_path / "good", tmp_path / "model", demo_df)
    outputs = _artifacts(tmp_path / "good-out")
    op.python_func(
        data_config=good.sections()["data"],
        serving_config=good.sections()["serving"],
        data_fingerprint="",
        feedback_through=0,
        **outputs,
    )
    assert "PASSED" in Path(outputs["report"].path).read_text()
    assert "PASSED" in Path(outputs["report_html"].path).read_text()
    assert (Path(outputs["validation"].path) / "validation.json").is_file()

    bad = config_in(tmp_path / "bad", tmp_path / "model", demo_df.assign(label="neutral"))
    outputs = _artifacts(tmp_path / "bad-out")
    with pytest.raises(DataValidationError, match="labels outside"):
        op.python_func(
            data_config=bad.sections()["data"],
            serving_config=bad.sections()["serving"],
            data_fingerprint="",
            feedback_through=0,
            **outputs,
        )
    # The failed step still shows why, in the Kubeflow UI and beside its outputs.
    assert "labels outside" in Path(outputs["report_html"].path).read_text()
    assert "labels outside" in (tmp_path / "bad-out" / "error.txt").read_text()


def test_evaluate_component_logs_confusion_matrix_roc_report_and_predictions(
    tmp_path: Path, demo_df: pd.DataFrame, tiny_model_dir: Path
) -> None:
    from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model

    op = components.build(Images(project="p", gpu="g")).evaluate
    cfg = config_in(tmp_path, tiny_model_dir, demo_df, ["evaluation.latency_samples=5"])
    data = tmp_path / "prepared"
    data.mkdir()
    demo_df.sample(n=60, random_state=3).to_parquet(data / "test.parquet", index=False)
    out = {
        "evaluation": Artifact(uri=str(tmp_path / "out" / "evaluation"), name="evaluation"),
        "predictions": Dataset(uri=str(tmp_path / "out" / "predictions"), name="predictions"),
        "report": HTML(uri=str(tmp_path / "out" / "report.html"), name="report"),
        "metrics": Metrics(uri=str(tmp_path / "out" / "metrics"), name="metrics"),
        "classification": ClassificationMetrics(uri=str(tmp_path / "out" / "cls"), name="classification"),
    }
    sections = cfg.sections()
    op.python_func(
        **{
            f"{name}_config": sections[name]
            for name in ("data", "model", "training", "evaluation", "gate", "registry")
        },
        environment=cfg.gitops.environment,
        dataset=Dataset(uri=str(data), name="dataset"),
        model=Model(uri=str(tiny_model_dir), name="model"),
        **out,
    )
    matrix = out["classification"].metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["negative", "positive"]
    assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == 60
    roc = out["classification"].metadata["confidenceMetrics"]
    assert roc[0]["falsePositiveRate"] == 0.0 and roc[-1]["recall"] == 1.0
    assert out["metrics"].metadata["challenger_macro_f1"] >= 0
    predictions = pd.read_parquet(out["predictions"].path)
    assert len(predictions) == 60 and "challenger_proba" in predictions.columns
    page = Path(out["report"].path).read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "<script" not in page


def test_resolve_config_hands_each_section_on_with_the_datas_fingerprint(
    tmp_path: Path, demo_df: pd.DataFrame
) -> None:
    from kfp.dsl import Artifact

    from refinery.config import DataConfig, config_text
    from refinery.data.load import fingerprint

    op = components.build(Images(project="p", gpu="g")).resolve_config
    cfg = config_in(tmp_path, tmp_path / "model", demo_df)
    demo_df.head(150).to_csv(tmp_path / "test.csv", index=False)

    def resolve(test_uri: str, name: str) -> Any:
        return op.python_func(
            config=config_text(cfg),
            data_uri=cfg.data.uri,
            test_uri=test_uri,
            epochs=2.0,
            learning_rate=0.01,
            environment="prod",
            resolved=Artifact(uri=str(tmp_path / name), name="resolved"),
        )

    run = resolve(str(tmp_path / "test.csv"), "first")
    # The typed parameters win over the configuration's values.
    assert run.training["epochs"] == 2.0 and run.training["learning_rate"] == 0.01
    assert run.gitops["environment"] == "prod" and run.data["test_uri"] == str(tmp_path / "test.csv")
    assert run.data_fingerprint == fingerprint(DataConfig.model_validate(run.data))
    assert run.config_sha and (tmp_path / "first" / "resolved.json").is_file()
    # Other files, or the same file with other content: another fingerprint, so no cached data step is reused.
    without_test = resolve("", "second")
    assert "test_uri" not in without_test.data and without_test.data_fingerprint != run.data_fingerprint
    assert resolve("", "third").data_fingerprint == without_test.data_fingerprint
    demo_df.head(300).to_csv(cfg.data.uri, index=False)
    assert resolve("", "fourth").data_fingerprint != without_test.data_fingerprint

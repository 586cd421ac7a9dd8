"""Component bodies called through KFP's python_func with artifacts under tmp_path (no pipeline run)."""

from __future__ import annotations

from pathlib import Path

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
    op.python_func(config=good.to_json(), **outputs)
    assert "PASSED" in Path(outputs["report"].path).read_text()
    assert "PASSED" in Path(outputs["report_html"].path).read_text()
    assert (Path(outputs["validation"].path) / "validation.json").is_file()

    bad = config_in(tmp_path / "bad", tmp_path / "model", demo_df.assign(label="neutral"))
    outputs = _artifacts(tmp_path / "bad-out")
    with pytest.raises(DataValidationError, match="labels outside"):
        op.python_func(config=bad.to_json(), **outputs)
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
    op.python_func(
        config=cfg.to_json(),
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

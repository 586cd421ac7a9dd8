"""The monitoring pipeline: compiled for the cluster configs/prod.yaml describes, loaded back through the
kfp SDK, and its one step's body run on a real registry, inference log and trigger log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import components
import pytest
import yaml
from kfp import components as kfp_components
from kfp.dsl import HTML, Artifact, Markdown
from pipelines.monitoring import PIPELINE_NAME
from pipelines.resources import STEP_SERVICES
from tests.unit.monitoring.test_controller import fill_log, register_champion, watching

from refinery.cli import main
from refinery.config import config_as_written, config_from_parameter, read_config
from refinery.version import Images

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "configs" / "prod.yaml"
IMAGES = Images(project="registry.test/ml/refinery:1.0-abc", gpu="registry.test/ml/refinery-gpu:1.0-abc")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("monitoring") / "monitoring-pipeline.yaml"
    argv = ["compile", "-c", str(PROD), "--pipeline", "monitoring", "--image", IMAGES.project, "-o", str(out)]
    assert main(argv) == 0
    ir, platform = yaml.safe_load_all(out.read_text())
    return out, ir, platform["platforms"]["kubernetes"]


def test_it_loads_back_through_the_kfp_sdk_with_the_whole_config_as_its_parameter(
    compiled: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    out, ir, _ = compiled
    loaded = kfp_components.load_component_from_file(str(out))
    assert loaded.name == PIPELINE_NAME
    assert list(loaded.component_spec.inputs) == ["config"]
    default = ir["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    # Compile-time sections included: the step compiles the training pipeline from it on drift.
    assert config_from_parameter(default) == read_config(PROD)


def test_one_uncached_step_on_the_project_image_with_its_services_secrets_and_retries(
    compiled: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    _, ir, kubernetes = compiled
    tasks = ir["root"]["dag"]["tasks"]
    assert list(tasks) == ["monitor"]
    assert tasks["monitor"]["cachingOptions"] == {}  # enableCache false is written as an empty mapping
    assert tasks["monitor"]["retryPolicy"]["maxRetryCount"] == 3
    executor = ir["deploymentSpec"]["executors"]["exec-monitor"]["container"]
    assert executor["image"] == IMAGES.project
    assert executor["resources"]["cpuLimit"] == 2.0
    prod = read_config(PROD).resources["prod"].credentials
    secrets = {
        s["secretName"] for s in kubernetes["deploymentSpec"]["executors"]["exec-monitor"]["secretAsEnv"]
    }
    assert secrets == {getattr(prod, service) for service in STEP_SERVICES["monitor"]}
    outputs = ir["components"]["comp-monitor"]["outputDefinitions"]["artifacts"]
    assert outputs["decision"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert outputs["drift_report"]["artifactType"]["schemaTitle"] == "system.HTML"


@pytest.fixture(scope="module")
def champion_state(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, object]:
    return register_champion(tmp_path_factory.mktemp("monitor-step"), tiny_model_dir, 0, with_stats=True)


def _step(champion_state: dict[str, object], tmp_path: Path, overrides: list[str]) -> tuple[str, dict]:
    """Run the component body on an embedded configuration handed over as the pipeline parameter."""
    cfg = read_config(
        REPO / "configs" / "test.yaml", watching(champion_state, tmp_path / "state", *overrides)
    )
    from refinery.config import resolve

    fill_log(resolve(cfg), str(champion_state["version"]), n=200, seed=1, drifted=True)
    artifacts = {
        "details": Artifact(uri=str(tmp_path / "details"), name="details"),
        "decision": Markdown(uri=str(tmp_path / "decision.md"), name="decision"),
        "drift_report": HTML(uri=str(tmp_path / "drift.html"), name="drift_report"),
    }
    op = components.build(IMAGES).monitor
    action = op.python_func(config=config_as_written(cfg), **artifacts)
    decision = json.loads((tmp_path / "details" / "decision.json").read_text())
    return action, decision


def test_the_step_shows_its_decision_as_markdown_and_the_drift_report_as_html(
    champion_state: dict[str, object], tmp_path: Path
) -> None:
    action, decision = _step(champion_state, tmp_path, ["monitoring.retrain=false"])
    assert action == decision["action"] == "retrain_disabled"
    markdown = (tmp_path / "decision.md").read_text()
    assert markdown.startswith("## Drift monitor: retrain_disabled")
    assert "| embedding | **FIRED** |" in markdown
    assert decision["reason"] in markdown
    report = (tmp_path / "drift.html").read_text()
    assert "<html" in report and len(report) > 100_000  # Evidently's self-contained report, not a stub


def test_a_window_too_small_to_test_gets_a_page_saying_why(
    champion_state: dict[str, object], tmp_path: Path
) -> None:
    action, decision = _step(
        champion_state, tmp_path, ["monitoring.min_window_size=500", "monitoring.window_size=600"]
    )
    assert action == decision["action"] == "insufficient_data"
    page = (tmp_path / "drift.html").read_text()
    assert "No drift report" in page and "200" in page
    assert "insufficient_data" in (tmp_path / "decision.md").read_text()

"""The compiled training pipeline: task graph, images, and nothing installed at run time.

Compiled from configs/prod.yaml (test_resource_profiles.py checks its profiles, test_cluster_compile.py
what the cluster contract asks of the compiled file).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from refinery.cli import main
from refinery.version import Images, image_tag, package_version

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "configs" / "prod.yaml"
REGISTRY = "registry.acme.example/ml"
STEPS = [
    "resolve-config",
    "validate-data",
    "prepare-data",
    "finetune",
    "evaluate",
    "gate",
    "register",
    "package",
    "check-serving",
    "promote",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compiled") / "training.yaml"
    assert main(["compile", "-c", str(PROD), "-o", str(out)]) == 0
    return out, next(yaml.safe_load_all(out.read_text()))


def _images(spec: dict) -> dict[str, str]:
    executors = spec["deploymentSpec"]["executors"]
    return {name.removeprefix("exec-"): e["container"]["image"] for name, e in executors.items()}


def test_compile_image_options_override_the_default(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    assert (
        main(
            [
                "compile",
                "-c",
                str(PROD),
                "-o",
                str(out),
                "--image",
                "reg.example/refinery:1",
                "--gpu-image",
                "reg.example/gpu:1",
            ]
        )
        == 0
    )
    images = _images(next(yaml.safe_load_all(out.read_text())))
    assert images.pop("finetune") == "reg.example/gpu:1"
    assert set(images.values()) == {"reg.example/refinery:1"}


def _tasks(spec: dict) -> dict[str, dict]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_compiled_yaml_loads_back_with_kfp(compiled: tuple[Path, dict]) -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(compiled[0]))
    assert loaded.name == "refinery-training"
    assert set(loaded.component_spec.inputs) == {
        "config",
        "data_uri",
        "test_uri",
        "epochs",
        "learning_rate",
        "environment",
    }


def test_every_step_runs_on_the_project_image_without_installing_packages(
    compiled: tuple[Path, dict],
) -> None:
    images = _images(compiled[1])
    assert set(images) == set(STEPS)
    default = Images.default(registry=REGISTRY)
    assert images.pop("finetune") == default.gpu
    assert set(images.values()) == {default.project}
    # One tag for both, made of the package version and the source commit, in the config's registry.
    assert default.project == f"{REGISTRY}/refinery:{image_tag()}"
    assert image_tag().startswith(package_version())
    text = compiled[0].read_text()
    assert "pip install" not in text and "packages_to_install" not in text


def test_task_graph_orders_the_loop_and_guards_promotion_with_the_gate(compiled: tuple[Path, dict]) -> None:
    tasks = _tasks(compiled[1])
    assert set(STEPS) <= set(tasks)
    # Every step takes its configuration sections from resolve-config, the run's first step.
    deps = {name: set(t.get("dependentTasks", [])) - {"resolve-config"} for name, t in tasks.items()}
    assert tasks["resolve-config"].get("dependentTasks", []) == []
    assert deps["validate-data"] == set()
    assert deps["prepare-data"] == {"validate-data"}
    assert deps["finetune"] == {"prepare-data"}
    assert deps["evaluate"] == {"prepare-data", "finetune"}
    assert deps["gate"] == {"evaluate"}
    assert deps["package"] == {"register"}
    assert deps["check-serving"] == {"package"}
    conditions = {name: t for name, t in tasks.items() if "triggerPolicy" in t}
    gate_passed = next(t for t in conditions.values() if "gate" in t["dependentTasks"])
    assert "gate" in gate_passed["triggerPolicy"]["condition"]
    assert "true" in gate_passed["triggerPolicy"]["condition"]
    # promote runs only inside the condition on the serving check, nested in the gate's.
    check_passed = next(t for t in conditions.values() if "check-serving" in t["dependentTasks"])
    assert "check-serving" in check_passed["triggerPolicy"]["condition"]
    assert "true" in check_passed["triggerPolicy"]["condition"]
    inner = compiled[1]["components"][check_passed["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"promote"}


def test_validate_data_shows_its_reports_as_html_and_markdown_artifacts(compiled: tuple[Path, dict]) -> None:
    _, spec = compiled
    outputs = spec["components"]["comp-validate-data"]["outputDefinitions"]["artifacts"]
    kinds = {name: o["artifactType"]["schemaTitle"] for name, o in outputs.items()}
    assert kinds == {
        "validation": "system.Artifact",
        "report": "system.Markdown",
        "report_html": "system.HTML",
    }


def test_a_search_compiles_to_rounds_of_parallel_trials_on_the_gpu_image(tmp_path: Path) -> None:
    from tests.pipelines.test_resource_profiles import MINIMAL_CLUSTER

    config = tmp_path / "search.yaml"
    config.write_text(
        MINIMAL_CLUSTER + "hpo: {enabled: true, trials: 5, parallelism: 2}\n"
        "resources: {dev: {finetune: {accelerator_type: nvidia.com/gpu, accelerator_count: 1}}}\n"
    )
    out = tmp_path / "p.yaml"
    assert main(["compile", "-c", str(config), "-o", str(out), "--gpu-image", "reg.example/gpu:1"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert "finetune" not in tasks
    loops = sorted(name for name in tasks if name.startswith("for-loop"))
    assert len(loops) == 3, "5 trials, 2 at a time: rounds of 2, 2 and 1"
    assert {tasks[name]["iteratorPolicy"]["parallelismLimit"] for name in loops} == {2}
    # Each round is suggested after the previous one merged: the search learns round by round.
    assert set(tasks["suggest-trials-2"]["dependentTasks"]) == {"merge-round", "resolve-config"}
    assert set(tasks["evaluate"]["dependentTasks"]) >= {"merge-round-3"}
    images = _images(spec)
    trials = {name: image for name, image in images.items() if name.startswith("finetune-trial")}
    assert len(trials) == 3 and set(trials.values()) == {"reg.example/gpu:1"}
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-finetune-trial"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert "resources" not in executors["exec-merge-round"]["container"]


def test_evaluate_shows_metrics_plots_report_and_predictions_as_artifacts(
    compiled: tuple[Path, dict],
) -> None:
    _, spec = compiled
    outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"]
    kinds = {name: o["artifactType"]["schemaTitle"] for name, o in outputs.items()}
    assert kinds == {
        "evaluation": "system.Artifact",
        "predictions": "system.Dataset",
        "report": "system.HTML",
        "metrics": "system.Metrics",
        "classification": "system.ClassificationMetrics",
    }

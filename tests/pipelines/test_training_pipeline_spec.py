"""The compiled training pipeline: task graph, images, and nothing installed at run time.

Compiled here without a config: no resource profiles (test_resource_profiles.py compiles with them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from refinery.cli import main
from refinery.version import Images, image_tag, package_version

STEPS = [
    "validate-data",
    "prepare-data",
    "finetune",
    "evaluate",
    "gate",
    "register",
    "package",
    "promote",
    "set-champion",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compiled") / "training.yaml"
    assert main(["compile", "-o", str(out)]) == 0
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


def test_without_a_config_no_step_gets_resources_but_finetune_is_retried(
    compiled: tuple[Path, dict],
) -> None:
    path, spec = compiled
    assert len(list(yaml.safe_load_all(path.read_text()))) == 1, "no platforms.kubernetes document"
    executors = spec["deploymentSpec"]["executors"]
    assert all("resources" not in e["container"] for e in executors.values())
    retried = {name: t["retryPolicy"] for name, t in _tasks(spec).items() if "retryPolicy" in t}
    assert list(retried) == ["finetune"]
    assert retried["finetune"]["maxRetryCount"] == 3


def test_compiled_yaml_loads_back_with_kfp(compiled: tuple[Path, dict]) -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(compiled[0]))
    assert loaded.name == "refinery-training"
    assert set(loaded.component_spec.inputs) == {"config"}


def test_every_step_runs_on_the_project_image_without_installing_packages(
    compiled: tuple[Path, dict],
) -> None:
    images = _images(compiled[1])
    assert set(images) == set(STEPS)
    default = Images.default()
    assert images.pop("finetune") == default.gpu
    assert set(images.values()) == {default.project}
    # One tag for both, made of the package version and the source commit.
    assert default.project == f"localhost/refinery:{image_tag()}"
    assert image_tag().startswith(package_version())
    text = compiled[0].read_text()
    assert "pip install" not in text and "packages_to_install" not in text


def test_task_graph_orders_the_loop_and_guards_promotion_with_the_gate(compiled: tuple[Path, dict]) -> None:
    tasks = _tasks(compiled[1])
    assert set(STEPS) <= set(tasks)
    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps["prepare-data"] == {"validate-data"}
    assert deps["finetune"] == {"prepare-data"}
    assert deps["evaluate"] == {"prepare-data", "finetune"}
    assert deps["gate"] == {"evaluate"}
    assert deps["package"] == {"register"}
    assert deps["promote"] == {"register", "package"}
    assert deps["set-champion"] == {"register", "package", "promote"}
    condition = next(t for t in tasks.values() if "triggerPolicy" in t)
    assert "gate" in condition["dependentTasks"]
    assert (
        "gate" in condition["triggerPolicy"]["condition"]
        and "true" in condition["triggerPolicy"]["condition"]
    )


def test_validate_data_shows_its_reports_as_html_and_markdown_artifacts(compiled: tuple[Path, dict]) -> None:
    _, spec = compiled
    outputs = spec["components"]["comp-validate-data"]["outputDefinitions"]["artifacts"]
    kinds = {name: o["artifactType"]["schemaTitle"] for name, o in outputs.items()}
    assert kinds == {
        "validation": "system.Artifact",
        "report": "system.Markdown",
        "report_html": "system.HTML",
    }

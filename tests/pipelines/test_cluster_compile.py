"""What `refinery compile -c configs/prod.yaml --registry R` must produce for a real cluster.

The cluster contract (ARCHITECTURE.md): no path of the compiling machine reaches the compiled pipeline,
no image comes from podman's local storage, every step that calls a network service is retried, the run
form's parameters are typed with the configuration's defaults, each step is given only the
configuration it reads, and no secret value is anywhere in the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipelines.resources import STEP_SERVICES, UNCACHED

from refinery.cli import main
from refinery.config import read_config, run_parameters

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "configs" / "prod.yaml"
REGISTRY = "registry.test:5000/team/ml"
# Values a platform engineer's shell may hold while compiling: none of them may reach the file.
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-never-compiled",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-never-compiled",
    "REFINERY_GIT_TOKEN": "git-token-never-compiled",
    "REFINERY_REGISTRY_PASSWORD": "registry-password-never-compiled",
    "PGPASSWORD": "pg-password-never-compiled",
}
# Absolute paths the file may name: where the image's PVCs and shared memory are mounted in the pods.
CONTAINER_PATHS = {"/mnt/checkpoints", "/mnt/model-cache", "/dev/shm"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Compiled from another working directory, with secrets in the environment."""
    root = tmp_path_factory.mktemp("cluster-compile")
    out = root / "pipeline.yaml"
    saved_cwd, saved_env = Path.cwd(), dict(os.environ)
    os.environ.update(SECRETS)
    os.chdir(root)
    try:
        assert main(["compile", "-c", str(PROD), "--registry", REGISTRY, "-o", str(out)]) == 0
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    text = out.read_text()
    ir, platform = yaml.safe_load_all(text)
    return text, ir, platform["platforms"]["kubernetes"]


def _tasks(ir: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tasks = dict(ir["root"]["dag"]["tasks"])
    for comp in ir["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_no_path_of_the_compiling_machine_reaches_the_pipeline(compiled: tuple[str, dict, dict]) -> None:
    text, ir, platform = compiled
    for machine_path in {str(REPO), str(Path.home()), str(Path.cwd())}:
        assert machine_path not in text, f"{machine_path} is in the compiled pipeline"
    # The configuration parameter carries paths as written: relative ones resolve in the step's image.
    config = yaml.safe_load(ir["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"])
    absolute = {
        value for _, value in _config_leaves(config) if isinstance(value, str) and value.startswith("/")
    }
    assert absolute <= CONTAINER_PATHS, absolute
    mounts = {
        m["mountPath"]
        for e in platform["deploymentSpec"]["executors"].values()
        for m in e.get("pvcMount", [])
    }
    assert mounts and mounts <= CONTAINER_PATHS


def _config_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _config_leaves(value, f"{prefix}.{key}")
    else:
        yield prefix, tree


def test_every_image_comes_from_the_registry(compiled: tuple[str, dict, dict]) -> None:
    _, ir, _ = compiled
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert images and all(image.startswith(f"{REGISTRY}/refinery") for image in images), images
    assert "localhost/" not in compiled[0]
    # Promotion names the same project image as the serving image (pinned by digest when it commits).
    image = _tasks(ir)["promote"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"]
    assert image.startswith(f"{REGISTRY}/refinery:")


def test_every_step_that_calls_a_service_has_a_retry_policy(compiled: tuple[str, dict, dict]) -> None:
    _, ir, _ = compiled
    tasks = _tasks(ir)
    network = {name for name, services in STEP_SERVICES.items() if services and name in tasks}
    assert network == {
        "resolve-config",
        "validate-data",
        "prepare-data",
        "finetune",
        "evaluate",
        "register",
        "package",
        "check-serving",
        "promote",
    }
    for name in network:
        assert tasks[name]["retryPolicy"]["maxRetryCount"] >= 1, name


def test_the_run_form_has_typed_parameters_with_the_configs_defaults(
    compiled: tuple[str, dict, dict],
) -> None:
    _, ir, _ = compiled
    parameters = ir["root"]["inputDefinitions"]["parameters"]
    types = {name: p["parameterType"] for name, p in parameters.items()}
    assert types == {
        "config": "STRING",
        "data_uri": "STRING",
        "test_uri": "STRING",
        "epochs": "NUMBER_DOUBLE",
        "learning_rate": "NUMBER_DOUBLE",
        "environment": "STRING",
    }
    expected = run_parameters(read_config(PROD))
    assert {name: parameters[name]["defaultValue"] for name in expected} == expected
    assert expected["data_uri"].startswith("s3://") and expected["environment"] == "prod"
    # The rest of the configuration, small enough to read in the form: only what differs from the defaults.
    assert len(parameters["config"]["defaultValue"]) < 2500


def test_each_step_is_given_only_the_configuration_it_reads(compiled: tuple[str, dict, dict]) -> None:
    _, ir, _ = compiled
    inputs = {
        name.removeprefix("comp-"): set(c["inputDefinitions"].get("parameters", {}))
        for name, c in ir["components"].items()
        if "executorLabel" in c
    }
    assert inputs["gate"] == {"gate_config"}
    data_inputs = {"data_config", "serving_config", "data_fingerprint", "feedback_through"}
    assert inputs["validate-data"] == data_inputs
    assert inputs["prepare-data"] == data_inputs
    assert inputs["finetune"] == {
        "data_config",
        "model_config",
        "training_config",
        "registry_config",
        "run_key",
    }
    assert inputs["promote"] >= {"registry_config", "gitops_config", "image"}
    assert not any("gitops_config" in names for step, names in inputs.items() if step != "promote")
    types = {
        name: p["parameterType"]
        for c in ir["components"].values()
        for name, p in c.get("inputDefinitions", {}).get("parameters", {}).items()
        if name.endswith("_config")
    }
    assert set(types.values()) == {"STRUCT"}, "sections are typed objects, not JSON strings"


def test_data_steps_key_their_cache_on_the_datas_fingerprint(compiled: tuple[str, dict, dict]) -> None:
    _, ir, _ = compiled
    tasks = _tasks(ir)
    for name in ("validate-data", "prepare-data"):
        source = tasks[name]["inputs"]["parameters"]["data_fingerprint"]["taskOutputParameter"]
        assert source == {"outputParameterKey": "data_fingerprint", "producerTask": "resolve-config"}
        assert tasks[name]["cachingOptions"].get("enableCache") is True
    # The monitoring pipeline's step is checked with that pipeline (tests/pipelines/test_monitoring_pipeline.py).
    for name in UNCACHED - {"monitor"}:
        assert not tasks[name]["cachingOptions"].get("enableCache"), name


def test_no_secret_value_is_in_the_file_only_secret_names(compiled: tuple[str, dict, dict]) -> None:
    text, _, platform = compiled
    for value in SECRETS.values():
        assert value not in text
    secrets = {
        entry["secretName"]
        for e in platform["deploymentSpec"]["executors"].values()
        for entry in e.get("secretAsEnv", [])
    }
    assert secrets == {
        "refinery-hf",
        "refinery-mlflow",
        "refinery-s3",
        "refinery-git",
        "refinery-registry",
        "refinery-feedback",
    }


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("registry.tracking_uri", "https://bot:hunter2@mlflow.example"),
        ("gitops.repository", "https://hunter2@git.example/acme/gitops.git"),  # a bare token
        ("serving.inference_log", "postgresql+psycopg://bot:hunter2@db.example/inference"),
    ],
)
def test_a_password_or_token_in_a_url_is_refused(
    key: str, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.yaml"
    assert main(["compile", "-c", str(PROD), "-o", str(out), "--set", f"{key}={url}"]) == 2
    err = capsys.readouterr().err
    assert f"{key} holds a password or token" in err and "hunter2" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", str(REPO / "configs" / "demo.yaml")], "is an embedded configuration (state_dir .refinery)"),
        (["-c", str(PROD), "--registry", "localhost"], "podman's local storage (localhost/)"),
        (
            ["-c", str(PROD), "--set", "gitops.repository=/srv/gitops.git"],
            "gitops.repository must be the remote",
        ),
        (
            ["-c", str(PROD), "--set", "data.uri=data/reviews.csv"],
            "data.uri 'data/reviews.csv' is a local path",
        ),
        (
            ["-c", str(PROD), "--set", "packaging.bento_store=null"],
            "packaging.bento_store must be object storage",
        ),
        (
            ["-c", str(PROD), "--set", "registry.tracking_uri=sqlite:///mlflow.db"],
            "registry.tracking_uri must",
        ),
    ],
)
def test_what_no_pod_could_use_is_refused_at_compile_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

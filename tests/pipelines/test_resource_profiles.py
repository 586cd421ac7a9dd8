"""Resource profiles in the compiled pipeline: configs/prod.yaml's GPU profile on finetune, the steps
profile on every other task, the finetune retry policy, and the errors a wrong environment or profile gets.

Both documents of the compiled YAML are checked: the IR (accelerator, CPU, memory, retry policy) and the
``platforms.kubernetes`` document (node selector, tolerations, volumes, secrets).
"""

# No `from __future__ import annotations`: KFP reads the annotations of the component below as types.

from pathlib import Path
from typing import Any

import pytest
import yaml
from pipelines.resources import STEP_SERVICES

from refinery.cli import main
from refinery.config import ResourceProfile, RunConfig, read_config
from refinery.credentials import SERVICES

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "configs" / "prod.yaml"
# The smallest cluster configuration: every service named, no resources.
MINIMAL_CLUSTER = """
state_dir: null
data: {uri: s3://data/reviews.csv, labels: [negative, positive]}
model: {base: s3://models/base}
registry: {tracking_uri: http://mlflow.example:5000, artifact_location: s3://mlflow/refinery}
packaging: {bento_store: s3://bentos/refinery}
gitops: {repository: https://git.example/acme/gitops.git}
serving: {inference_log: postgresql+psycopg://refinery@db.example/inference}
monitoring: {trigger_log: postgresql+psycopg://refinery@db.example/inference}
images: {registry: registry.example/ml}
"""


def minimal_cluster_config(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(MINIMAL_CLUSTER)
    return path


def _compile(out: Path, *args: str) -> tuple[dict, dict]:
    """Compile with ``args``; the IR and the kubernetes platform document (empty when there is none)."""
    assert main(["compile", "-o", str(out), *args]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    platform = docs[1]["platforms"]["kubernetes"] if len(docs) > 1 else {}
    return docs[0], platform


@pytest.fixture(scope="module")
def prod() -> RunConfig:
    return read_config(PROD)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return _compile(tmp_path_factory.mktemp("prod") / "training.yaml", "-c", str(PROD))


def _resources(ir: dict, step: str) -> dict:
    return ir["deploymentSpec"]["executors"][f"exec-{step}"]["container"].get("resources", {})


def _platform(platform: dict, step: str) -> dict:
    return platform.get("deploymentSpec", {}).get("executors", {}).get(f"exec-{step}", {})


def _steps(ir: dict) -> list[str]:
    return [name.removeprefix("exec-") for name in ir["deploymentSpec"]["executors"]]


def _tasks(ir: dict) -> dict[str, dict]:
    tasks = dict(ir["root"]["dag"]["tasks"])
    for comp in ir["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _expected_ir_resources(profile: ResourceProfile) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "resourceCpuRequest": profile.cpu_request,
        "resourceCpuLimit": profile.cpu_limit,
        "resourceMemoryRequest": profile.memory_request,
        "resourceMemoryLimit": profile.memory_limit,
    }
    return {key: value for key, value in expected.items() if value is not None}


def _secret_envs(executor: dict) -> set[tuple[str, str, str]]:
    return {
        (entry["secretName"], pair["secretKey"], pair["envVar"])
        for entry in executor.get("secretAsEnv", [])
        for pair in entry["keyToEnv"]
    }


def _credential_envs(prod: RunConfig, step: str) -> set[tuple[str, str, str]]:
    """The Secret keys a step gets for the services it calls (each key is its variable's name)."""
    credentials = prod.resources["prod"].credentials
    return {
        (getattr(credentials, service), name, name)
        for service in STEP_SERVICES[step]
        for name in SERVICES[service].names
    }


def test_prod_config_has_a_gpu_profile_for_finetune(prod: RunConfig) -> None:
    # The rest of this file reads its expectations from the config; this pins what prod.yaml promises.
    gpu = prod.resources["prod"].finetune
    assert prod.gitops.environment == "prod"
    assert (gpu.accelerator_type, gpu.accelerator_count) == ("nvidia.com/gpu", 1)
    assert gpu.shm_size == "8Gi" and gpu.checkpoint_pvc and gpu.model_cache_pvc
    assert [s.env for s in gpu.secrets] == ["HF_TOKEN"]
    assert prod.resources["prod"].steps.accelerator_type is None
    assert prod.training.checkpoint.dir == "/mnt/checkpoints" and prod.model.cache_dir == "/mnt/model-cache"


def test_finetune_gets_the_gpu_profile_in_the_ir(compiled: tuple[dict, dict], prod: RunConfig) -> None:
    gpu = prod.resources["prod"].finetune
    resources = _resources(compiled[0], "finetune")
    assert resources["accelerator"]["resourceType"] == gpu.accelerator_type
    assert resources["accelerator"]["resourceCount"] == str(gpu.accelerator_count)
    for key, value in _expected_ir_resources(gpu).items():
        assert resources[key] == value, key


def test_finetune_gets_the_gpu_profile_on_kubernetes(compiled: tuple[dict, dict], prod: RunConfig) -> None:
    gpu = prod.resources["prod"].finetune
    executor = _platform(compiled[1], "finetune")
    assert executor["nodeSelector"]["labels"] == gpu.node_selector
    assert (
        executor["tolerations"]
        == [t.model_dump(exclude_none=True) for t in gpu.tolerations]
        == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    assert executor["emptyDirMounts"] == [
        {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": gpu.shm_size}
    ]
    mounts = {m["constant"]: m["mountPath"] for m in executor["pvcMount"]}
    assert mounts == {
        gpu.checkpoint_pvc: prod.training.checkpoint.dir,
        gpu.model_cache_pvc: prod.model.cache_dir,
    }
    profile_secrets = {(s.secret, s.key, s.env) for s in gpu.secrets}
    assert _secret_envs(executor) == profile_secrets | _credential_envs(prod, "finetune")
    assert ("refinery-hf", "token", "HF_TOKEN") in _secret_envs(executor)
    # It logs to MLflow and reads from S3: both services' Secrets, not git's or the image registry's.
    assert {secret for secret, _, _ in _secret_envs(executor)} == {
        "refinery-hf",
        "refinery-mlflow",
        "refinery-s3",
    }


def test_every_other_step_gets_the_steps_profile_and_no_gpu(
    compiled: tuple[dict, dict], prod: RunConfig
) -> None:
    ir, platform = compiled
    steps = prod.resources["prod"].steps
    others = [step for step in _steps(ir) if step != "finetune"]
    assert len(others) == 9
    pull = prod.resources["prod"].credentials.image_pull_secret
    for step in others:
        resources = _resources(ir, step)
        assert "accelerator" not in resources, step
        assert {k: v for k, v in resources.items() if k.startswith("resource")} == _expected_ir_resources(
            steps
        ), step
        executor = _platform(platform, step)
        assert [s["secretName"] for s in executor["imagePullSecret"]] == [pull], step
        # Exactly the Secrets of the services the step calls: git's only where the commit is made.
        assert _secret_envs(executor) == {(s.secret, s.key, s.env) for s in steps.secrets} | _credential_envs(
            prod, step
        ), step
    assert "secretAsEnv" not in _platform(platform, "gate")
    promote = {secret for secret, _, _ in _secret_envs(_platform(platform, "promote"))}
    assert promote == {"refinery-mlflow", "refinery-s3", "refinery-git", "refinery-registry"}


def test_finetune_is_retried_for_preemption_and_every_network_step_for_outages(
    compiled: tuple[dict, dict], prod: RunConfig
) -> None:
    tasks = _tasks(compiled[0])
    assert tasks["finetune"]["retryPolicy"] == {
        "maxRetryCount": prod.resources["prod"].finetune_retries,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "86400s",
    }
    network = prod.resources["prod"].network_retries
    for name in (
        "resolve-config",
        "validate-data",
        "prepare-data",
        "evaluate",
        "register",
        "package",
        "check-serving",
        "promote",
    ):
        assert tasks[name]["retryPolicy"] == {
            "maxRetryCount": network.count,
            "backoffDuration": f"{network.backoff_seconds}s",
            "backoffFactor": network.factor,
            "backoffMaxDuration": f"{network.max_seconds}s",
        }, name
    # The gate calls no service: a failure there is no outage.
    assert "retryPolicy" not in tasks["gate"]


def test_a_cluster_config_without_resources_compiles_with_none(tmp_path: Path) -> None:
    ir, platform = _compile(tmp_path / "p.yaml", "-c", str(minimal_cluster_config(tmp_path)))
    assert platform == {}
    assert all(_resources(ir, step) == {} for step in _steps(ir))
    assert _tasks(ir)["finetune"]["retryPolicy"]["maxRetryCount"] == 3
    assert _tasks(ir)["promote"]["retryPolicy"]["maxRetryCount"] == 3


def test_retries_follow_the_config(tmp_path: Path) -> None:
    ir, _ = _compile(tmp_path / "p5.yaml", "-c", str(PROD), "--set", "resources.prod.finetune_retries=5")
    assert _tasks(ir)["finetune"]["retryPolicy"]["maxRetryCount"] == 5
    ir, _ = _compile(tmp_path / "p0.yaml", "-c", str(PROD), "--set", "resources.prod.finetune_retries=0")
    assert "retryPolicy" not in _tasks(ir)["finetune"]


def test_an_unknown_environment_fails_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), "-c", str(PROD), "--environment", "staging"]) == 2
    err = capsys.readouterr().err
    assert "no resources for environment 'staging'" in err and "known environments: prod" in err
    assert str(PROD) in err
    # gitops.environment is the default: a prod config pointed at dev has no profile for dev.
    assert main(["compile", "-o", str(out), "-c", str(PROD), "--set", "gitops.environment=dev"]) == 2
    assert "'dev'" in capsys.readouterr().err
    # An environment named explicitly must exist, also in a config without resources.
    minimal = str(minimal_cluster_config(tmp_path))
    assert main(["compile", "-o", str(out), "-c", minimal, "--environment", "prod"]) == 2
    assert "known environments: none" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["compile", "-o", str(out), "--environment", "prod"])
    assert exited.value.code == 2
    assert "the following arguments are required: -c/--config" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resources.prod.finetune.accelerator_type=null", "resources.prod.finetune.accelerator_count is 1"),
        ("resources.prod.finetune.accelerator_count=0", "needs accelerator_count >= 1"),
        ("resources.prod.steps.memory_limit=8GB", "resources.prod.steps.memory_limit: '8GB' is not"),
        ("resources.prod.finetune.shm_size=lots", "resources.prod.finetune.shm_size: 'lots' is not"),
        ("training.checkpoint.dir=s3://bucket/ckpt", "checkpoint_pvc 'refinery-checkpoints' is mounted at"),
        ("model.cache_dir=/mnt/checkpoints", "would both be mounted at /mnt/checkpoints"),
    ],
)
def test_an_inconsistent_profile_is_rejected_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), "-c", str(PROD), "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_embedded_runs_get_no_profile_and_no_retries(tmp_path: Path) -> None:
    # kfp.local honours retry policies (with their backoff waits); a local failure is no outage.
    from kfp import compiler
    from pipelines.training import build_training_pipeline

    out = tmp_path / "local.yaml"
    compiler.Compiler().compile(
        build_training_pipeline(read_config(REPO / "configs" / "demo.yaml")), str(out)
    )
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 1
    assert all("retryPolicy" not in task for task in _tasks(docs[0]).values())
    assert all(_resources(docs[0], step) == {} for step in _steps(docs[0]))


def test_apply_profile_with_an_empty_profile_changes_nothing(tmp_path: Path) -> None:
    from kfp import compiler, dsl
    from pipelines.resources import apply_profile

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def step() -> None:
        pass

    @dsl.pipeline(name="empty-profile")
    def pipe():
        apply_profile(step(), ResourceProfile(), checkpoint_dir="/ckpt", model_cache_dir="/cache")

    out = tmp_path / "empty.yaml"
    compiler.Compiler().compile(pipe, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 1 and _resources(docs[0], "step") == {}


def test_a_secret_key_read_into_two_variables_keeps_both(tmp_path: Path) -> None:
    _, platform = _compile(
        tmp_path / "p.yaml",
        "-c",
        str(PROD),
        "--set",
        "resources.prod.finetune.secrets=[{secret: refinery-hf, key: token, env: HF_TOKEN},"
        " {secret: refinery-hf, key: token, env: HUGGING_FACE_HUB_TOKEN}]",
    )
    read = {entry for entry in _secret_envs(_platform(platform, "finetune")) if entry[0] == "refinery-hf"}
    assert read == {("refinery-hf", "token", "HF_TOKEN"), ("refinery-hf", "token", "HUGGING_FACE_HUB_TOKEN")}

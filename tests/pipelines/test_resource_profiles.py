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

from refinery.cli import main
from refinery.config import ResourceProfile, RunConfig, load_config

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "configs" / "prod.yaml"


def _compile(out: Path, *args: str) -> tuple[dict, dict]:
    """Compile with ``args``; the IR and the kubernetes platform document (empty when there is none)."""
    assert main(["compile", "-o", str(out), *args]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    platform = docs[1]["platforms"]["kubernetes"] if len(docs) > 1 else {}
    return docs[0], platform


@pytest.fixture(scope="module")
def prod() -> RunConfig:
    return load_config(PROD, base=REPO)


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
    assert _secret_envs(executor) == {(s.secret, s.key, s.env) for s in gpu.secrets}
    assert ("refinery-hf", "token", "HF_TOKEN") in _secret_envs(executor)


def test_every_other_step_gets_the_steps_profile_and_no_gpu(
    compiled: tuple[dict, dict], prod: RunConfig
) -> None:
    ir, platform = compiled
    steps = prod.resources["prod"].steps
    others = [step for step in _steps(ir) if step != "finetune"]
    assert len(others) == 7
    for step in others:
        resources = _resources(ir, step)
        assert "accelerator" not in resources, step
        assert {k: v for k, v in resources.items() if k.startswith("resource")} == _expected_ir_resources(
            steps
        ), step
        executor = _platform(platform, step)
        assert set(executor) == {"secretAsEnv"}, f"{step}: {sorted(executor)}"
        assert _secret_envs(executor) == {(s.secret, s.key, s.env) for s in steps.secrets}, step


def test_finetune_alone_is_retried_with_backoff(compiled: tuple[dict, dict], prod: RunConfig) -> None:
    tasks = _tasks(compiled[0])
    assert tasks["finetune"]["retryPolicy"] == {
        "maxRetryCount": prod.resources["prod"].finetune_retries,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "86400s",
    }
    assert [name for name, task in tasks.items() if "retryPolicy" in task] == ["finetune"]


def test_a_config_without_resources_compiles_with_none(tmp_path: Path) -> None:
    ir, platform = _compile(tmp_path / "demo.yaml", "-c", str(REPO / "configs" / "demo.yaml"))
    assert platform == {}
    assert all(_resources(ir, step) == {} for step in _steps(ir))
    assert _tasks(ir)["finetune"]["retryPolicy"]["maxRetryCount"] == 3


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
    demo = str(REPO / "configs" / "demo.yaml")
    assert main(["compile", "-o", str(out), "-c", demo, "--environment", "prod"]) == 2
    assert "known environments: none" in capsys.readouterr().err
    assert main(["compile", "-o", str(out), "--environment", "prod"]) == 2
    assert "need a config" in capsys.readouterr().err
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


def test_local_runs_get_no_profile_and_no_retries(tmp_path: Path, prod: RunConfig) -> None:
    # kfp.local honours retry policies (with their backoff waits); a local failure is no preemption.
    from kfp import compiler
    from pipelines.training import build_training_pipeline

    out = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_training_pipeline(), str(out))
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
    assert _secret_envs(_platform(platform, "finetune")) == {
        ("refinery-hf", "token", "HF_TOKEN"),
        ("refinery-hf", "token", "HUGGING_FACE_HUB_TOKEN"),
    }

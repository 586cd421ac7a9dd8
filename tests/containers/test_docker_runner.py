"""Pipeline steps in containers: refinery's DockerRunner setup on a real engine, with the project image.

The engine is the one DOCKER_HOST names, or a podman service the module starts (podman 4.3's, whose
removal of auto-removed containers made kfp report failed steps as successes). Every container test
runs in the project image `make image` builds (localhost/refinery:<version>-<sha>); it fails, naming
the image, when that image is missing, and is skipped only where there is no engine at all. The
mount-planning tests at the end need no engine.
"""
# No `from __future__ import annotations`: KFP reads the component bodies' annotations as types.

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kfp import dsl, local
from kfp.dsl import Dataset, Input, Output
from tests.conftest import config_in

from refinery.errors import PipelineError
from refinery.orchestration import containers
from refinery.orchestration.containers import BindMount
from refinery.version import Images

_NO_ENGINE = not os.environ.get("DOCKER_HOST") and shutil.which("podman") is None
needs_engine = pytest.mark.skipif(
    _NO_ENGINE, reason="no container engine: DOCKER_HOST is unset and podman is not installed"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One engine for the module: DOCKER_HOST as set, or a podman service until the module ends."""
    with containers.container_engine(tmp_path_factory.mktemp("engine")) as host:
        yield host


@pytest.fixture(scope="module")
def project_image(engine: str) -> str:
    image = Images.default().project
    try:
        containers.require_images([image])
    except PipelineError as exc:
        pytest.fail(f"the container tests run in the project image: {exc}")
    return image


def _step_containers() -> list[Any]:
    import docker

    client = docker.from_env()
    try:
        return list(client.containers.list(all=True, filters={"label": containers.STEP_LABEL}))
    finally:
        client.close()


# Component bodies: KFP ships each function's source into the container, so they import what they use.
def fail_here(reason: str):
    raise ValueError(f"deliberate failure: {reason}")


def never_runs(marker: str):
    from pathlib import Path

    Path(marker).write_text("the step after a failed one ran", encoding="utf-8")


def write_text(read_only_dir: str, out: Output[Dataset]):
    import json
    import os
    from pathlib import Path

    try:
        (Path(read_only_dir) / "written-by-step").write_text("x", encoding="utf-8")
        read_only = False
    except OSError:
        read_only = True
    home = Path(os.environ["HOME"])
    (home / "scratch").write_text("HOME is writable", encoding="utf-8")
    report = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "home": str(home),
        "env": os.environ.get("REFINERY_TEST_ENV"),
        "input": (Path(read_only_dir) / "input.txt").read_text(encoding="utf-8"),
        "read_only": read_only,
    }
    Path(out.path).write_text(json.dumps(report), encoding="utf-8")


def read_back(data: Input[Dataset]) -> str:
    from pathlib import Path

    return Path(data.path).read_text(encoding="utf-8")


def _run(
    pipeline: Any, root: Path, mounts: list[BindMount], printed: io.StringIO | None = None, **arguments: str
):
    """Run a pipeline with refinery's DockerRunner setup; what kfp.local prints goes to ``printed``."""
    local.init(
        runner=containers.docker_runner(mounts, {"REFINERY_TEST_ENV": "passed"}),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    with containers.reporting_exit_codes(), redirect_stdout(printed or io.StringIO()):
        pipeline(**arguments)


@pytest.mark.slow
@needs_engine
def test_a_step_that_raises_in_its_container_fails_the_run_naming_the_step(
    project_image: str, tmp_path: Path
) -> None:
    on_image = {"base_image": project_image, "install_kfp_package": False}
    fail_op = dsl.component(fail_here, **on_image)
    after_op = dsl.component(never_runs, **on_image)

    @dsl.pipeline(name="fails-first")
    def fails_first(marker: str):
        failed = fail_op(reason="raised inside the container")
        after_op(marker=marker).after(failed)

    marker = tmp_path / "marker.txt"
    before = {c.id for c in _step_containers()}
    with pytest.raises(RuntimeError) as raised:
        _run(fails_first, tmp_path / "root", [BindMount(str(tmp_path), read_only=False)], marker=str(marker))
    assert "Inner task failed: 'fail-here'" in _ANSI.sub("", str(raised.value))
    assert not marker.exists(), "the step after the failed one must not run"
    assert {c.id for c in _step_containers()} <= before, "step containers are removed after the run"


@pytest.mark.slow
@needs_engine
def test_a_failed_step_shows_its_error_in_the_run_output(project_image: str, tmp_path: Path) -> None:
    fail_op = dsl.component(fail_here, base_image=project_image, install_kfp_package=False)

    @dsl.pipeline(name="fails")
    def fails():
        fail_op(reason="shown to the user")

    printed = io.StringIO()
    with pytest.raises(RuntimeError):
        _run(fails, tmp_path / "root", [], printed)
    text = _ANSI.sub("", printed.getvalue())
    assert "ValueError: deliberate failure: shown to the user" in text
    assert "Task 'fail-here' finished with status FAILURE" in text


@pytest.mark.slow
@needs_engine
def test_a_passing_step_writes_an_artifact_the_host_reads_as_the_invoking_user(
    project_image: str, tmp_path: Path
) -> None:
    on_image = {"base_image": project_image, "install_kfp_package": False}
    write_op = dsl.component(write_text, **on_image)
    read_op = dsl.component(read_back, **on_image)

    @dsl.pipeline(name="writes")
    def writes(read_only_dir: str):
        written = write_op(read_only_dir=read_only_dir)
        read_op(data=written.outputs["out"])

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "input.txt").write_text("from the host", encoding="utf-8")
    root = tmp_path / "root"
    _run(writes, root, [BindMount(str(shared), read_only=True)], read_only_dir=str(shared))

    (run_dir,) = root.iterdir()
    artifact = run_dir / "write-text" / "out"
    report = json.loads(artifact.read_text(encoding="utf-8"))
    assert (artifact.stat().st_uid, artifact.stat().st_gid) == (os.getuid(), os.getgid())
    assert (report["uid"], report["gid"]) == (os.getuid(), os.getgid())
    assert report["home"] == containers.CONTAINER_HOME
    assert report["env"] == "passed"
    assert report["input"] == "from the host"
    assert report["read_only"], "a read-only mount must refuse writes"
    assert not (shared / "written-by-step").exists()
    # The downstream step read the artifact through the bind-mounted pipeline root.
    executor_output = json.loads((run_dir / "read-back" / "executor_output.json").read_text(encoding="utf-8"))
    assert json.loads(executor_output["parameterValues"]["Output"]) == report


# ------------------------------------------------------------------------------- the real pipeline


def _training_config(tmp_path: Path, data: pd.DataFrame, model_dir: Path, extra: list[str] | None = None):
    return config_in(tmp_path, model_dir, data, extra or [])


@pytest.mark.slow
@needs_engine
def test_training_pipeline_in_containers_registers_packages_and_promotes(
    project_image: str, tmp_path: Path, demo_df: pd.DataFrame, tiny_model_dir: Path
) -> None:
    from refinery.gitops.repo import current_release
    from refinery.orchestration.local import run_training
    from refinery.registry.mlflow_registry import Registry

    cfg = _training_config(tmp_path, demo_df, tiny_model_dir)
    console = io.StringIO()
    summary = run_training(cfg, runner="docker", console=console)
    shown = console.getvalue()
    assert summary.succeeded, f"{summary.to_text()}\n{shown}"
    assert f"steps run in {project_image}" in shown
    assert "▶ finetune" in shown and "✓ promote success" in shown
    assert "executor_input" not in shown, "the condensed view hides kfp's executor input"

    champion = Registry(cfg.registry).champion(cfg.gitops.environment)
    assert champion is not None and champion.version == summary.steps["register"]["version"]
    assert champion.tags["bento_tag"] == summary.steps["package"]["bento_tag"]
    assert Path(champion.tags["bento_uri"]).is_relative_to(cfg.packaging.bento_store)
    # Lineage names the commit the image was built from (REFINERY_GIT_SHA; there is no .git inside),
    # which its tag (<version>-<sha12>) names too.
    assert champion.tags["git_sha"][:12] == project_image.rsplit("-", 1)[-1]
    release = current_release(cfg.gitops)
    assert release is not None and release.bento_tag == champion.tags["bento_tag"]
    # What the steps wrote into the bind-mounted state belongs to the user who ran refinery.
    state = Path(cfg.state_dir)
    owners = {p.stat().st_uid for p in state.rglob("*") if not p.is_symlink()}
    assert owners == {os.getuid()}


@pytest.mark.slow
@needs_engine
def test_bad_data_fails_validate_data_in_its_container_with_the_expectation(
    project_image: str, tmp_path: Path, demo_df: pd.DataFrame, tiny_model_dir: Path
) -> None:
    from refinery.orchestration.local import run_training

    cfg = _training_config(tmp_path, demo_df.drop(columns=["label"]), tiny_model_dir)
    summary = run_training(cfg, runner="docker", console=io.StringIO())
    assert not summary.succeeded
    assert summary.failed_step == "validate-data"
    assert summary.error and "label" in summary.error
    assert set(summary.steps) <= {"resolve-config", "validate-data"}


# ------------------------------------------------------------------------ mounts, without an engine


def test_bind_mounts_cover_the_configured_paths_with_the_right_modes(make_config) -> None:
    cfg = make_config()
    mounts = {m.path: m.read_only for m in containers.bind_mounts(cfg)}
    assert mounts[cfg.state_dir] is False
    assert mounts[cfg.data.uri] is True
    assert mounts[cfg.model.base] is True
    assert mounts[cfg.packaging.service_dir] is True
    assert mounts[cfg.gitops.seed_dir] is True
    # Registry (sqlite and artifacts), BentoML store and GitOps repository live under state_dir: its
    # mount covers them, and each path is mounted once.
    assert cfg.registry.tracking_uri.startswith(f"sqlite:///{cfg.state_dir}/")
    assert set(mounts) == {
        cfg.state_dir,
        cfg.data.uri,
        cfg.model.base,
        cfg.packaging.service_dir,
        cfg.gitops.seed_dir,
    }


def test_writable_locations_outside_the_state_get_their_own_mounts(make_config, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    cfg = make_config(
        [
            f"gitops.repository={elsewhere / 'gitops' / 'repo.git'}",
            f"packaging.bento_store={elsewhere / 'bentos'}",
            "registry.tracking_uri=http://127.0.0.1:5000",
        ]
    )
    mounts = {m.path: m.read_only for m in containers.bind_mounts(cfg)}
    # The repository does not exist yet: the step creates it beside its path and renames it into
    # place, so the folder it goes into is created here and mounted writable.
    assert mounts[str(elsewhere / "gitops")] is False
    assert not (elsewhere / "gitops" / "repo.git").exists()
    # The Bento store is created empty and mounted itself.
    assert mounts[str(elsewhere / "bentos")] is False
    assert (elsewhere / "bentos").is_dir()
    assert str(elsewhere) not in mounts


def test_a_cluster_configuration_gets_no_mount_at_all(make_config, tmp_path: Path) -> None:
    """Its steps share nothing but kfp's artifact root (which kfp mounts) and network services."""
    cluster = make_config(
        [
            "state_dir=null",
            "data.uri=s3://data/reviews.csv",
            "model.base=s3://models/tiny",
            "registry.tracking_uri=http://127.0.0.1:5000",
            "registry.artifact_location=s3://mlflow/refinery",
            "packaging.bento_store=s3://bentos/refinery",
            "gitops.repository=http://127.0.0.1:8000/gitops.git",
            "serving.inference_log=postgresql+psycopg://refinery@127.0.0.1/inference",
            "monitoring.trigger_log=postgresql+psycopg://refinery@127.0.0.1/inference",
        ]
    )
    assert not cluster.embedded
    assert containers.bind_mounts(cluster) == []


def test_file_urls_that_do_not_exist_are_not_mounted_nor_created(make_config) -> None:
    cfg = make_config(["gitops.repository=file:///nonexistent/refinery-gitops.git"])
    paths = [m.path for m in containers.bind_mounts(cfg)]
    assert not any(p.startswith("/nonexistent") for p in paths)
    assert not Path("/nonexistent").exists()


def test_a_state_folder_that_would_hide_the_containers_own_tmp_is_refused(make_config) -> None:
    cfg = make_config(["state_dir=/tmp"])
    with pytest.raises(PipelineError, match="state_dir is /tmp"):
        containers.bind_mounts(cfg)


def test_nested_mounts_of_the_same_mode_collapse_into_the_outer_one() -> None:
    mounts = containers._without_covered(
        [
            BindMount("/data/a", read_only=True),
            BindMount("/data/a/b", read_only=True),
            BindMount("/data/a/b/rw", read_only=False),
            BindMount("/data/a/b/rw/c", read_only=False),
            BindMount("/data/ab", read_only=True),
        ]
    )
    assert mounts == [
        BindMount("/data/a", True),
        BindMount("/data/a/b/rw", False),
        BindMount("/data/ab", True),
    ]


def test_the_exit_code_fix_is_installed_only_inside_its_block() -> None:
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    with containers.reporting_exit_codes():
        assert docker_task_handler.run_docker_container is containers.run_container
    assert docker_task_handler.run_docker_container is original

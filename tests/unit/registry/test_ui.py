"""`refinery ui`: the MLflow UI on the configured registry store, reached over HTTP.

The server tests start the real command in a subprocess (it execs ``mlflow server``) on a store that
refinery's Registry created, once on sqlite and once on the session's throwaway PostgreSQL server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import REPO_ROOT, TEST_CONFIG
from tests.processes import free_port, stop_group

from refinery.cli import main
from refinery.config import RunConfig, load_config
from refinery.registry.mlflow_registry import Registry

READY_TIMEOUT_S = 120


def _set_args(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"refinery ui exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no answer from {url} in {READY_TIMEOUT_S} s:\n{log.read_text()}"
        time.sleep(0.5)


def _register_one_version(cfg: RunConfig, folder: Path) -> str:
    """A version with one artifact, made the champion, in the store the Registry class created."""
    from mlflow import MlflowClient

    uri = cfg.registry.tracking_uri
    assert Registry(cfg.registry).versions() == []  # creates the store's tables
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        cfg.registry.experiment, artifact_location=cfg.registry.artifact_location
    )
    run_id = client.create_run(experiment).info.run_id
    (folder / "config.json").write_text('{"layers": 2}')
    client.log_artifact(run_id, str(folder / "config.json"), "model")
    client.create_registered_model(cfg.registry.model_name)
    version = client.create_model_version(cfg.registry.model_name, source=f"runs:/{run_id}/", run_id=run_id)
    client.set_registered_model_alias(cfg.registry.model_name, "champion", version.version)
    return run_id


@pytest.mark.slow
def test_ui_serves_the_registry_store(sql_url: str, tmp_path: Path) -> None:
    overrides = [f"state_dir={tmp_path / 'state'}", f"registry.tracking_uri={sql_url}"]
    cfg = load_config(TEST_CONFIG, overrides, base=REPO_ROOT)
    run_id = _register_one_version(cfg, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "ui.log"
    argv = [sys.executable, "-m", "refinery.cli", "ui", "-c", str(TEST_CONFIG), *_set_args(overrides)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, proc, log)
        page = httpx.get(f"{url}/", timeout=30)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        # What the UI's pages ask for: the versions in the configured store, and their artifacts.
        versions = httpx.get(
            f"{url}/ajax-api/2.0/mlflow/model-versions/search",
            params={"filter": f"name='{cfg.registry.model_name}'"},
            timeout=30,
        )
        assert versions.status_code == 200, versions.text
        assert [v["version"] for v in versions.json()["model_versions"]] == ["1"]
        model = httpx.get(
            f"{url}/ajax-api/2.0/mlflow/registered-models/get", params={"name": cfg.registry.model_name}
        )
        assert model.json()["registered_model"]["aliases"] == [{"alias": "champion", "version": "1"}]
        artifact = httpx.get(
            f"{url}/get-artifact", params={"run_uuid": run_id, "path": "model/config.json"}, timeout=30
        )
        assert artifact.status_code == 200, artifact.text
        assert artifact.json() == {"layers": 2}
    finally:
        stop_group(proc)
    # The fixture's plain `champion` alias (an older registry's) stands for the configured environment's.
    assert f"(review-sentiment-test: champion-dev version 1) on {url}" in log.read_text()
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "mlartifacts").exists()


def test_ui_on_an_unreachable_store_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    store = f"postgresql+psycopg://refinery:s3cret@127.0.0.1:{port}/mlflow"
    overrides = [f"state_dir={tmp_path / 'state'}", f"registry.tracking_uri={store}"]

    assert main(["ui", "-c", str(TEST_CONFIG), *_set_args(overrides)]) == 3  # a service unreachable

    err = capsys.readouterr().err
    assert f"registry unreachable at postgresql+psycopg://refinery:***@127.0.0.1:{port}/mlflow" in err
    assert "s3cret" not in err


def test_ui_of_an_mlflow_server_registry_names_its_ui(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [f"state_dir={tmp_path / 'state'}", "registry.tracking_uri=http://mlflow.mlflow:5000"]

    assert main(["ui", "-c", str(TEST_CONFIG), *_set_args(overrides)]) == 0

    assert "its UI is at http://mlflow.mlflow:5000" in capsys.readouterr().out

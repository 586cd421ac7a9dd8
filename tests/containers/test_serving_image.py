"""The serving image: built with podman from a Bento of the tiny model, run the way the Deployment runs it.

The image is built once for the module (a few minutes the first time on a machine, about a minute when
podman's layer cache holds the installed packages) on the local base image `containers/build-base.sh`
builds; the test fails, naming that image, when it is missing. Skipped only where podman is not
installed. The container is always removed, and the image too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests.conftest import LABELS, REPO_ROOT, config_in
from tests.processes import free_port
from tests.serving.serving_support import wait_until_ready

from refinery.config import RunConfig
from refinery.errors import PackagingError
from refinery.monitoring.inference_log import TABLE_NAME
from refinery.packaging.bento import package
from refinery.packaging.container import ContainerImage, containerize, podman_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

MODEL_VERSION = "5"
IMAGE_REPOSITORY = "localhost/refinery-serving-test"
READY_TIMEOUT_S = 120
# The uid of the `bentoml` user the image runs as; k8s/base/deployment.yaml's runAsUser.
SERVICE_UID = "1034"
INFERENCE_DB = "/tmp/inference.db"


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class Built:
    cfg: RunConfig
    image: ContainerImage


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, demo_df: pd.DataFrame
) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("serving-image")
    cfg = config_in(root, tiny_model_dir, demo_df, [f"gitops.image_repository={IMAGE_REPOSITORY}"])
    bento = package(cfg, tiny_model_dir, MODEL_VERSION)
    image = containerize(cfg, bento.bento_tag)
    print(
        f"\nbuilt {image.image} from {bento.bento_tag}: {image.size_bytes / 1e9:.2f} GB in {image.seconds} s"
    )
    try:
        yield Built(cfg, image)
    finally:
        _podman("rmi", "--force", image.image, check=False)


@pytest.fixture(scope="module")
def container(built: Built) -> Iterator[tuple[str, httpx.Client]]:
    """The image running as k8s/base/deployment.yaml runs it: read-only root file system, HOME=/tmp,
    a writable volume for BentoML's metrics folder, the inference log URL in the environment."""
    name = f"refinery-serving-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    _podman(
        "run",
        "--detach",
        "--name",
        name,
        "--read-only",
        "--volume",
        "/home/bentoml/bentoml/prometheus_multiproc_dir",
        "--env",
        "HOME=/tmp",
        "--env",
        f"REFINERY_INFERENCE_LOG=sqlite:///{INFERENCE_DB}",
        "--publish",
        f"127.0.0.1:{port}:3000",
        built.image.image,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:

        def problem() -> str | None:
            state = _podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            return None if state == "running" else f"the container is {state}"

        def logs() -> str:
            out = _podman("logs", name, check=False)
            return out.stdout + out.stderr

        wait_until_ready(base_url, READY_TIMEOUT_S, problem, logs)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield name, client
    finally:
        _podman("rm", "--force", "--volumes", name, check=False)


# Rows in an sqlite inference log (its table appears with the first prediction): argv = file, table.
_COUNT_ROWS = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
found = db.execute("select count(*) from sqlite_master where name = ?", (sys.argv[2],)).fetchone()[0]
print(db.execute(f"select count(*) from {sys.argv[2]}").fetchone()[0] if found else 0)
"""


def _logged_predictions(name: str) -> int:
    return int(_podman("exec", name, "python", "-c", _COUNT_ROWS, INFERENCE_DB, TABLE_NAME).stdout.strip())


def test_image_is_labelled_and_runs_as_a_non_root_user(
    built: Built, container: tuple[str, httpx.Client]
) -> None:
    name, _ = container
    assert built.image.image.startswith(f"{IMAGE_REPOSITORY}:")
    assert built.image.image.endswith(":" + built.image.bento_tag.split(":")[1])
    assert built.image.size_bytes > 0 and built.image.seconds > 0
    config = json.loads(_podman("image", "inspect", "--format", "{{json .Config}}", built.image.image).stdout)
    assert config["User"] == f"{SERVICE_UID}:{SERVICE_UID}"
    assert config["Labels"]["refinery.bento_tag"] == built.image.bento_tag
    assert config["Labels"]["refinery.model_version"] == MODEL_VERSION
    # The server process itself (PID 1's uid), not only the image's declaration.
    assert _podman("exec", name, "stat", "-c", "%u", "/proc/1").stdout.strip() == SERVICE_UID
    # No compilers came in with the packages.
    assert _podman("exec", name, "sh", "-c", "command -v gcc cc g++", check=False).stdout.strip() == ""


def test_classify_answers_with_the_declared_labels_and_logs(container: tuple[str, httpx.Client]) -> None:
    name, client = container
    before = _logged_predictions(name)
    single = client.post("/classify", json={"texts": "Great blender, crushes ice in seconds."})
    batch = client.post("/classify", json={"texts": ["Stopped working after a week.", "Love it!"]})
    assert single.status_code == 200, single.text
    assert batch.status_code == 200, batch.text
    predictions = single.json() + batch.json()
    assert len(predictions) == 3
    for item in predictions:
        assert item["label"] in LABELS
        assert set(item["scores"]) == set(LABELS)
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert item["model_version"] == MODEL_VERSION
    assert _logged_predictions(name) == before + 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param({"texts": []}, "texts is an empty list", id="empty-list"),
        pytest.param({"texts": "   "}, "texts is blank", id="blank"),
        pytest.param({"text": "hello"}, "Field required", id="misnamed-field"),
    ],
)
def test_malformed_request_gets_400(
    container: tuple[str, httpx.Client], payload: dict[str, object], reason: str
) -> None:
    name, client = container
    before = _logged_predictions(name)
    response = client.post("/classify", json=payload)
    assert response.status_code == 400, response.text
    assert reason in response.text
    assert _logged_predictions(name) == before


def test_metrics_endpoint_answers(container: tuple[str, httpx.Client]) -> None:
    _, client = container
    assert client.post("/classify", json={"texts": "fine"}).status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text
    assert 'endpoint="/classify"' in metrics.text


def test_failed_build_shows_the_end_of_its_log(built: Built, tmp_path: Path) -> None:
    service_dir = tmp_path / "serving"
    shutil.copytree(REPO_ROOT / "serving", service_dir)
    (service_dir / "Containerfile").write_text(
        'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo "deliberately broken build step" && exit 3\n'
    )
    cfg = built.cfg.model_copy(
        update={"packaging": built.cfg.packaging.model_copy(update={"service_dir": str(service_dir)})}
    )
    image = f"{IMAGE_REPOSITORY}:broken-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PackagingError, match=r"(?s)podman build exited with code \d+.*deliberately broken"):
        containerize(cfg, built.image.bento_tag, image)
    assert _podman("image", "exists", image, check=False).returncode != 0

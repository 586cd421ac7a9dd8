"""The training pipeline as a cluster runs it: every step in the project image, sharing nothing but
kfp.local's artifact root (the stand-in for KFP's artifact store) and network services on loopback.

No host folder is mounted into a step. The services are real (tests/cluster_services.py): an MLflow
server on PostgreSQL with its artifacts in S3 (SeaweedFS), the S3 store also holding the data, the base
model and the Bentos, a git remote over ssh, and an OCI registry with a password holding the project
image, which is pulled from it for the steps and for serving. Credentials reach the step containers as
environment variables only, as a Kubernetes Secret would put them there.

One run, promoting over ssh, has each service cut (or its credentials refused) as the first step that
calls it starts: that step fails naming the service, and its retry succeeds once the service is back. The
run must still end with one registered, promoted version whose commit is on the remote, whose Bento is in
S3 and whose serving container, started from exactly the image and release the overlay names, answers
/classify, with nothing duplicated or half-moved. git over http with a token is tested against the same
kind of server in tests/cluster/test_git_remotes.py.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from tests.cluster_services import GitServer, MlflowServer, ObjectStore, OciRegistry
from tests.conftest import REPO_ROOT
from tests.postgres import PostgresServer
from tests.processes import free_port

from refinery.config import RunConfig, read_config
from refinery.podman import podman_env
from refinery.version import Images, image_tag

pytestmark = [pytest.mark.slow]

REPO = "gitops"
OVERLAY = "k8s/overlays/dev/kustomization.yaml"
READY_TIMEOUT_S = 180


@dataclass
class Cluster:
    """The services of one cluster, and what the runs need to reach them."""

    root: Path
    store: ObjectStore
    mlflow: MlflowServer
    git: GitServer
    registry: OciRegistry
    postgres: PostgresServer
    images: Images
    digest: str
    inference_log: str
    secrets: dict[str, str] = field(default_factory=dict)

    def config(self) -> RunConfig:
        """A cluster configuration (no state_dir) naming these services, as a platform engineer writes it."""
        text = f"""
state_dir: null
data: {{uri: "s3://data/reviews.csv", labels: [negative, positive],
        validation: {{min_rows: {{min: 100}}, min_rows_per_class: {{min: 20}}}},
        split: {{validation_fraction: 0.15, test_fraction: 0.2, seed: 7}}}}
model: {{base: "s3://models/tiny", max_length: 64}}
training: {{epochs: 8, learning_rate: 0.002, batch_size: 16, eval_batch_size: 128, seed: 7,
            precision: fp32}}
# The run must reach promotion whatever its scores: what is tested is the services.
gate: {{min: {{macro_f1: 0.0}}, max_regression: {{macro_f1: 1.0}}, significance: {{mode: "off"}},
        slices: {{enabled: false}}}}
evaluation: {{latency_samples: 5}}
registry: {{tracking_uri: "{self.mlflow.url}", artifact_location: "s3://mlflow/refinery",
            model_name: review-sentiment}}
packaging: {{bento_store: "s3://bentos/refinery"}}
gitops: {{repository: "{self.git.ssh_url(REPO)}", environment: dev}}
serving: {{inference_log: "{self.inference_log}"}}
monitoring: {{trigger_log: "{self.inference_log}"}}
storage: {{endpoint_url: "{self.store.endpoint}", region: us-east-1}}
images: {{registry: "{self.registry.host}"}}
resources:
  dev:
    network_retries: {{count: 3, backoff_seconds: 2, factor: 1.0, max_seconds: 60}}
    credentials: {{registry: refinery-mlflow, object_store: refinery-s3, git: refinery-git,
                   container_registry: refinery-registry}}
"""
        path = self.root / "cluster.yaml"
        path.write_text(text)
        return read_config(path)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    object_store: ObjectStore,
    mlflow_server: MlflowServer,
    oci_registry: OciRegistry,
    postgres_server: PostgresServer,
    tiny_model_dir: Path,
    demo_df: pd.DataFrame,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    local = Images.default().project
    if subprocess.run(["podman", "image", "exists", local], env=podman_env(), check=False).returncode:
        pytest.fail(f"the project image {local} does not exist: build it with `make image`")
    # The release's image goes to the registry, as `make push` puts it there; the steps and the serving
    # container then run what the registry serves.
    images = Images.default(registry=oci_registry.host)
    digest = oci_registry.push(local, "refinery", image_tag())
    _podman(
        "pull",
        "--quiet",
        "--tls-verify=false",
        f"--creds={oci_registry.username}:{oci_registry.password}",
        images.project,
    )
    for bucket in ("data", "models", "mlflow", "bentos"):
        object_store.create_bucket(bucket)
    object_store.upload_dir(tiny_model_dir, "models", "tiny")
    demo_df.to_csv(root / "reviews.csv", index=False)
    object_store.upload_file(root / "reviews.csv", "data", "reviews.csv")
    with GitServer(root / "git") as git:
        git.create_repo(REPO, seed_dir=REPO_ROOT / "k8s", prefix="k8s")
        cluster = Cluster(
            root=root,
            store=object_store,
            mlflow=mlflow_server,
            git=git,
            registry=oci_registry,
            postgres=postgres_server,
            images=images,
            digest=digest,
            inference_log=postgres_server.url(postgres_server.create_database("inference")),
        )
        # What the cluster's Secrets would hold, handed to the step containers as environment variables.
        cluster.secrets = {
            "AWS_ACCESS_KEY_ID": object_store.access_key,
            "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
            "REFINERY_GIT_SSH_KEY": git.private_key,
            "REFINERY_GIT_KNOWN_HOSTS": git.known_hosts,
            "REFINERY_REGISTRY_USERNAME": oci_registry.username,
            "REFINERY_REGISTRY_PASSWORD": oci_registry.password,
        }
        try:
            yield cluster
        finally:
            _podman("rmi", "--force", images.project, check=False)


def _podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:2])} exited with {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


class Console(io.TextIOBase):
    """Where the run's condensed progress goes; calls ``on_line`` with every line as it is written (in the
    run's own thread, between one step and the next)."""

    def __init__(self, on_line: Callable[[str], None] = lambda line: None) -> None:
        self.lines: list[str] = []
        self._on_line = on_line
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self.lines.append(line)
            self._on_line(line)
        return len(text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _run(cluster: Cluster, cfg: RunConfig, console: Console) -> Any:
    from refinery.orchestration.local import run_training

    saved = dict(os.environ)
    os.environ.update(cluster.secrets)
    try:
        with tempfile.TemporaryDirectory(dir=cluster.root) as cwd:
            os.chdir(cwd)  # kfp.local's run folders go under the working directory
            try:
                return run_training(
                    cfg,
                    runner="docker",
                    images=Images(cluster.images.project, cluster.images.project),
                    console=console,
                )
            finally:
                os.chdir(REPO_ROOT)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Outage:
    """One service out of action while the first step that calls it runs."""

    step: str
    cut: Callable[[], None]
    restore: Callable[[], None]
    message: str  # a regular expression the step's output must match
    seen: list[str] = field(default_factory=list)
    applied: bool = False
    over: bool = False


class OutagePlan:
    """Cuts each service as its step starts and restores it when that attempt has failed."""

    def __init__(self, outages: list[Outage]) -> None:
        self.outages = outages

    def on_line(self, line: str) -> None:
        current = next((o for o in self.outages if not o.over), None)
        if current is None:
            return
        if line == f"▶ {current.step}" and not current.applied:
            current.cut()
            current.applied = True
        elif current.applied:
            current.seen.append(line)
            if line.startswith(f"✗ {current.step} failure"):
                current.restore()
                current.over = True


@dataclass
class ClusterRun:
    """The run, what it printed, and the outages it went through."""

    summary: Any
    console: Console
    outages: list[Outage]


@pytest.fixture(scope="module")
def cluster_run(cluster: Cluster) -> ClusterRun:
    """The run, promoting over ssh, with each service cut as the first step that calls it starts."""
    s3, mlflow, registry, git = (
        re.escape(cluster.store.endpoint),
        re.escape(cluster.mlflow.url),
        re.escape(cluster.registry.host),
        # The user part of a URL is masked in messages (in an https URL it may be a token).
        re.escape(re.sub(r"//[^@/]+@", "//***@", cluster.git.ssh_url(REPO))),
    )
    plan = OutagePlan(
        [
            Outage(
                "resolve-config",
                cluster.store.cut,
                cluster.store.restore,
                rf"(?s)DataError: cannot read .*{s3}",
            ),
            Outage(
                "evaluate",
                cluster.mlflow.cut,
                cluster.mlflow.restore,
                rf"RegistryError: registry unreachable at {mlflow}",
            ),
            Outage(
                "promote",
                cluster.registry.cut,
                cluster.registry.restore,
                rf"container registry {registry} is unreachable",
            ),
            Outage(
                "promote",
                lambda: cluster.git.reject_credentials(True),
                lambda: cluster.git.reject_credentials(False),
                rf"(?s)GitOps repository {git} is not reachable.*Permission denied",
            ),
        ]
    )
    console = Console(plan.on_line)
    return ClusterRun(_run(cluster, cluster.config(), console), console, plan.outages)


def _registry(cluster: Cluster) -> Any:
    """The registry, for reading versions, aliases and tags (which live in the server, not in S3)."""
    from refinery.config import RegistryConfig
    from refinery.registry.mlflow_registry import Registry

    return Registry(
        RegistryConfig(
            tracking_uri=cluster.mlflow.url,
            artifact_location="s3://mlflow/refinery",
            model_name="review-sentiment",
        )
    )


def _overlay(cluster: Cluster) -> dict[str, Any]:
    return yaml.safe_load(cluster.git.show(REPO, OVERLAY))


def test_a_run_in_containers_ends_with_a_promoted_version_on_the_remote_and_in_the_stores(
    cluster: Cluster, cluster_run: ClusterRun
) -> None:
    console = cluster_run.console
    assert cluster_run.summary.succeeded, f"{cluster_run.summary.to_text()}\n{console.text}"
    assert f"steps run in {cluster.images.project}" in console.text
    assert "✓ promote success" in console.text
    # The packaged Bento was served in the project image from the S3 store and loaded before promote.
    assert "✓ check-serving success" in console.text
    assert cluster_run.summary.steps["check-serving"]["passed"] is True
    registry = _registry(cluster)
    # Nothing duplicated by the retries: one version, one Bento, one promotion commit, no revert.
    assert [v.version for v in registry.versions()] == ["1"]
    # Promoted to dev (the run's gitops.environment): its alias and records, and no other environment's.
    champion = registry.champion("dev")
    assert champion is not None and champion.version == "1"
    assert registry.champions() == {"dev": "1"}
    # The Bento and the model's artifacts are in S3, where every step and the serving pods can read them.
    name, version = champion.tags["bento_tag"].split(":")
    assert champion.tags["bento_uri"] == f"s3://bentos/refinery/{name}/{version}.bento"
    assert cluster.store.list("bentos", "refinery/") == [f"refinery/{name}/{version}.bento"]
    assert any(
        key.endswith("/artifacts/model/model.safetensors")
        for key in cluster.store.list("mlflow", "refinery/")
    )
    # The commit is on the remote, on top of the seed, naming the image by the digest the registry holds
    # and the release the registry's tags record.
    assert cluster.git.log(REPO) == [
        f"promote review-sentiment v1 to dev (bento {champion.tags['bento_tag']})",
        "Seed",
    ]
    overlay = _overlay(cluster)
    assert overlay["images"] == [
        {"name": "refinery-serving", "newName": f"{cluster.registry.host}/refinery", "digest": cluster.digest}
    ]
    assert champion.tags["dev.serving_image"] == f"{cluster.registry.host}/refinery@{cluster.digest}"
    literals = dict(item.split("=", 1) for item in overlay["configMapGenerator"][0]["literals"])
    assert literals["REFINERY_MODEL_VERSION"] == "1"
    assert literals["REFINERY_BENTO_URI"] == champion.tags["bento_uri"]
    head = subprocess.run(
        ["git", "--git-dir", str(cluster.git.repo_path(REPO)), "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert champion.tags["dev.gitops_commit"] == head.stdout.strip()


def test_each_service_cut_during_the_run_fails_its_step_which_succeeds_once_it_is_back(
    cluster_run: ClusterRun,
) -> None:
    console = cluster_run.console
    assert cluster_run.summary.succeeded, f"{cluster_run.summary.to_text()}\n{console.text}"
    for outage in cluster_run.outages:
        assert outage.over, f"{outage.step} never failed: {console.text}"
        assert re.search(outage.message, "\n".join(outage.seen)), f"{outage.step}: {outage.seen}"
    # Each failed step ran again and succeeded: once for the single outages, twice for promote; every
    # other step ran once.
    started = [line.removeprefix("▶ ") for line in console.lines if line.startswith("▶ ")]
    retried = {"resolve-config": 2, "evaluate": 2, "promote": 3}
    assert {step: started.count(step) for step in started} == {step: retried.get(step, 1) for step in started}


def test_the_serving_container_runs_exactly_what_the_overlay_names(
    cluster: Cluster, cluster_run: ClusterRun, tmp_path: Path
) -> None:
    assert cluster_run.summary.succeeded
    # The Deployment as Argo CD would apply it: the overlay rendered from a clone of the remote.
    checkout = tmp_path / "gitops"
    subprocess.run(["git", "clone", "--quiet", str(cluster.git.repo_path(REPO)), str(checkout)], check=True)
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(checkout / "k8s" / "overlays" / "dev")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    image = container["image"]
    assert image == f"{cluster.registry.host}/refinery@{cluster.digest}"
    # The kubelet's part: pull exactly that image, and run it as the pod spec says (user, read-only root,
    # writable volumes, environment from the ConfigMap and the Secrets). The port changes only because the
    # container shares this machine's network, where 3000 may be taken.
    _podman(
        "pull",
        "--quiet",
        "--tls-verify=false",
        f"--creds={cluster.registry.username}:{cluster.registry.password}",
        image,
    )
    port = free_port()
    args = [a if a != "3000" else str(port) for a in container["args"]]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= config_map["data"]
    env |= {"REFINERY_INFERENCE_LOG": cluster.inference_log, **cluster.store.env()}
    name = f"refinery-serving-{port}"
    run = ["run", "--detach", "--name", name, "--network=host", "--read-only"]
    run += ["--user", f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"]
    run += [f"--tmpfs={m['mountPath']}:rw,mode=1777" for m in container["volumeMounts"]]
    for key, value in env.items():
        run += ["--env", f"{key}={value}"]
    _podman(*run, image, *args)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            state = _podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", _podman("logs", name, check=False).stdout[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _podman("logs", name, check=False).stdout[-3000:]
            time.sleep(1)
        answer = httpx.post(
            f"{base}/classify", json={"texts": ["great product, works well", "broke in a day"]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert [r["model_version"] for r in answer.json()] == ["1", "1"]
        assert {r["label"] for r in answer.json()} <= {"negative", "positive"}
        logs = _podman("logs", name, check=False)
        assert config_map["data"]["REFINERY_BENTO_URI"] in logs.stdout + logs.stderr
    finally:
        _podman("rm", "--force", name, check=False)
    # Every answered prediction is in the inference log.
    from refinery.monitoring.inference_log import InferenceLog

    assert InferenceLog(cluster.inference_log).count() == 2

"""The k8s/ tree: every kustomization renders, every rendered object validates, and the objects keep the
house rules and agree with the configuration and the code that reads them.

Rendering uses the real `kubectl kustomize` (offline). Built-in kinds are validated strictly (unknown
fields rejected) against the Kubernetes JSON schemas of two Kubernetes versions bundled with
`kubernetes-validate`; the custom resources (Argo CD's Application and AppProject, the Prometheus
Operator's ServiceMonitor and PrometheusRule) against strict JSON schemas kept in tests/manifests/
crd_schemas, written from the upstream CRDs. checkov, installed in its own virtual environment by
`make checkov` (its pins conflict with kfp's), must report no failed check on what a cluster receives.
Nothing here was applied to a cluster: no Kubernetes API server can run on the CI machine.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
CONFIGS = REPO_ROOT / "configs"
PROD_CONFIG = CONFIGS / "prod.yaml"
CRD_SCHEMAS = REPO_ROOT / "tests" / "manifests" / "crd_schemas"
CHECKOV = REPO_ROOT / "build" / "checkov-venv" / "bin" / "checkov"


def _kind(path: Path) -> str:
    return str((yaml.safe_load(path.read_text()) or {}).get("kind", "Kustomization"))


OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# Kustomizations that render on their own; components only render through the overlays that include them.
KUSTOMIZATIONS = sorted(
    str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml") if _kind(p) == "Kustomization"
)
COMPONENTS = sorted(
    str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml") if _kind(p) == "Component"
)
# What a cluster receives: everything but the base, which only the overlays apply.
DEPLOYED = [d for d in KUSTOMIZATIONS if d != "base"]
# The oldest Kubernetes minor version the manifests support (CronJob podFailurePolicy and timeZone are
# GA from 1.31 on) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.31", "1.37")
RELEASE_KEYS = (
    "REFINERY_MODEL_NAME",
    "REFINERY_MODEL_VERSION",
    "REFINERY_BENTO_TAG",
    "REFINERY_BENTO_URI",
    "REFINERY_BENTO_SHA256",
)
# kustomize fields that are deprecated (patchesStrategicMerge in particular is banned by STYLE.md).
DEPRECATED_FIELDS = ("patchesStrategicMerge", "patchesJson6902", "bases", "commonLabels", "vars", "imageTags")
CRD_KINDS = {
    ("argoproj.io/v1alpha1", "Application"),
    ("argoproj.io/v1alpha1", "AppProject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# The checkov checks skipped by an annotation beside the object, and why (each annotation repeats its
# reason). A new skip needs a reason in the manifest and an entry here, so a reviewer sees both.
CHECKOV_SKIPS = {
    # The committed manifests name placeholders (the release's image is written by promotion, or set by
    # the platform engineer, by digest): no tag and no digest until then.
    "CKV_K8S_14": "image tag fixed",
    "CKV_K8S_43": "image by digest",
    # Pinned by digest, so IfNotPresent cannot run stale code.
    "CKV_K8S_15": "imagePullPolicy Always",
    # The client libraries read credentials from environment variables by design (refinery.credentials).
    "CKV_K8S_35": "secrets as files",
}
SERVING_EGRESS_PORTS = {53, 443, 5432}


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: the manifests are rendered with `kubectl kustomize` (.ci/run installs it)"
        )
    return path


@functools.cache
def _rendered(kubectl: str, directory: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` prints (a fresh copy: tests may not share mutations)."""
    return copy.deepcopy(list(_rendered(kubectl, str(directory))))


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["serving"]
    return containers[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        where = f"{o['kind']} {o['metadata']['name']}"
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield where, o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield where, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def prod_config() -> dict[str, Any]:
    return yaml.safe_load(PROD_CONFIG.read_text())


def kustomization(directory: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / directory / "kustomization.yaml").read_text())


# --------------------------------------------------------------------------------------------- the tree


def test_the_tree_has_base_overlays_components_platform_monitor_mlflow_and_argocd() -> None:
    assert OVERLAYS == ["dev", "prod", "staging"]
    assert set(KUSTOMIZATIONS) == {
        "base",
        "overlays/dev",
        "overlays/staging",
        "overlays/prod",
        "platform",
        "monitor",
        "mlflow",
        "argocd",
    }
    assert set(COMPONENTS) == {"components/serving-network", "components/serving-monitoring"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_kustomization_renders(kubectl: str, directory: str) -> None:
    assert render(kubectl, K8S / directory)


def test_no_deprecated_kustomize_fields() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        data = yaml.safe_load(path.read_text())
        used = sorted(set(data) & set(DEPRECATED_FIELDS))
        assert not used, f"{path.relative_to(REPO_ROOT)} uses deprecated {used}"
    for path in K8S.rglob("*.yaml"):
        assert "patchesStrategicMerge" not in path.read_text(), path


def _secrets_with_values(objects: list[dict[str, Any]]) -> list[str]:
    return [
        o.get("metadata", {}).get("name", "?")
        for o in objects
        if isinstance(o, dict) and o.get("kind") == "Secret" and (o.get("data") or o.get("stringData"))
    ]


def test_no_plaintext_secrets(kubectl: str) -> None:
    for path in K8S.rglob("*.yaml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert not _secrets_with_values(docs), f"{path} holds a plaintext Secret"
        for doc in docs:
            assert "secretGenerator" not in doc, f"{path} generates a Secret from committed values"
    for directory in KUSTOMIZATIONS:
        assert not _secrets_with_values(render(kubectl, K8S / directory)), directory


# ----------------------------------------------------------------------------------------------- serving


def test_base_serving_contract(kubectl: str) -> None:
    objects = render(kubectl, K8S / "base")
    deployment, service = one(objects, "Deployment"), one(objects, "Service")
    c = container(deployment)
    assert c["image"] == "refinery-serving"  # rewritten by each overlay's `images:` on promotion
    # The project image's entrypoint is `refinery`: it fetches the release's Bento, then serves it.
    assert c["args"] == ["serve", "--host", "0.0.0.0", "--port", "3000"]
    assert c["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "3000",
        "prometheus.io/path": "/metrics",
    }
    assert c["envFrom"] == [
        {"configMapRef": {"name": "refinery-release"}},
        {"secretRef": {"name": "refinery-s3", "optional": True}},
    ]
    # The root file system is read-only: the Bento is fetched into a volume.
    home = next(e["value"] for e in c["env"] if e["name"] == "BENTOML_HOME")
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert home in {m["mountPath"] for m in c["volumeMounts"]}
    log_env = next(e for e in c["env"] if e["name"] == "REFINERY_INFERENCE_LOG")
    assert "value" not in log_env
    assert log_env["valueFrom"] == {"secretKeyRef": {"name": "refinery-inference-log", "key": "url"}}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["port"] == 3000
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # The HorizontalPodAutoscaler owns the replica count: the Deployment names none.
    assert "replicas" not in deployment["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }


def test_dev_overlay_names_nothing_released_and_the_release_configmap(kubectl: str) -> None:
    objects = render(kubectl, K8S / "overlays" / "dev")
    assert {o["metadata"].get("namespace") for o in objects} == {"refinery-dev"}
    deployment, config_map = one(objects, "Deployment"), one(objects, "ConfigMap")
    c = container(deployment)
    # Nothing promoted yet: no image, only the base's name, which no registry holds.
    assert c["image"] == "refinery-serving"
    # The generated name carries a content hash, and the Deployment references that exact name.
    assert config_map["metadata"]["name"].startswith("refinery-release-")
    assert c["envFrom"][0] == {"configMapRef": {"name": config_map["metadata"]["name"]}}
    assert {k: config_map["data"][k] for k in RELEASE_KEYS} == dict.fromkeys(RELEASE_KEYS, "none")
    assert config_map["data"]["REFINERY_ENVIRONMENT"] == "dev"
    assert "replicas" not in deployment["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)


def test_prod_overlay_patches_resources_and_autoscales_above_its_disruption_budget(kubectl: str) -> None:
    data = kustomization("overlays/prod")
    assert data["patches"], "prod sizes the Deployment with `patches:`"
    objects = render(kubectl, K8S / "overlays" / "prod")
    assert {o["metadata"].get("namespace") for o in objects} == {"refinery-prod"}
    deployment, base = one(objects, "Deployment"), one(render(kubectl, K8S / "base"), "Deployment")
    assert "replicas" not in deployment["spec"]
    prod_res, base_res = container(deployment)["resources"], container(base)["resources"]
    assert prod_res != base_res
    assert prod_res["requests"]["memory"] == "2Gi"
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_is_an_environment_of_the_same_release_contract(kubectl: str, overlay: str) -> None:
    """What promotion (refinery.gitops.repo) relies on, for every folder it discovers as an environment:
    the namespace, the release literals `none` before the first promotion, and the base."""
    data = kustomization(f"overlays/{overlay}")
    assert data["namespace"] == f"refinery-{overlay}"
    assert data["resources"][0] == "../../base"
    assert set(data.get("components", [])) == {
        "../../components/serving-network",
        "../../components/serving-monitoring",
    }
    # Promotion rewrites the YAML body from its parsed form; only the top comment block survives.
    text = (K8S / "overlays" / overlay / "kustomization.yaml").read_text()
    body = text[text.index("apiVersion:") :]
    assert not [line for line in body.splitlines() if line.lstrip().startswith("#")], overlay
    generators = {g["name"]: g for g in data["configMapGenerator"]}
    literals = dict(item.split("=", 1) for item in generators["refinery-release"]["literals"])
    assert {k: literals[k] for k in RELEASE_KEYS} == dict.fromkeys(RELEASE_KEYS, "none")
    assert literals["REFINERY_ENVIRONMENT"] == overlay
    assert "replicas" not in data, "the HorizontalPodAutoscaler owns the replicas"

    objects = render(kubectl, K8S / "overlays" / overlay)
    assert {o["metadata"].get("namespace") for o in objects} == {f"refinery-{overlay}"}
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for pdb in [o for o in objects if o["kind"] == "PodDisruptionBudget"]:
        # A budget at or above the autoscaler's floor would block every node drain.
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], overlay
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_staging_overlay_runs_two_pods_or_more_with_a_disruption_budget(kubectl: str) -> None:
    objects = render(kubectl, K8S / "overlays" / "staging")
    hpa, pdb = one(objects, "HorizontalPodAutoscaler"), one(objects, "PodDisruptionBudget")
    assert hpa["spec"]["minReplicas"] == 2
    assert pdb["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("directory", [*(f"overlays/{o}" for o in OVERLAYS), "mlflow", "monitor"])
def test_images_are_named_only_by_digest(directory: str) -> None:
    """No kustomization names an image by a tag, which can move: the seed names none (nothing released, or
    the project image not chosen yet), and promotion writes the serving image by digest (tests/unit/gitops,
    tests/cluster)."""
    for entry in kustomization(directory).get("images") or []:
        assert "newTag" not in entry, f"{directory}: image {entry} is named by tag"
        assert str(entry.get("digest", "")).startswith("sha256:"), f"{directory}: image {entry} has no digest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_network_policy_admits_callers_on_3000_and_reaches_dns_postgres_and_s3(
    kubectl: str, overlay: str
) -> None:
    objects = render(kubectl, K8S / "overlays" / overlay)
    policy, deployment = one(objects, "NetworkPolicy"), one(objects, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for rule in policy["spec"]["ingress"]:
        assert rule["ports"] == [{"port": 3000, "protocol": "TCP"}]
        assert rule["from"], "an ingress rule without peers would admit everyone"
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"refinery/serving-client": "true"}}} in peers
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
        for p in peers
    )
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == SERVING_EGRESS_PORTS
    # The peers' selectors are exactly as written: the base's labels (added to selectors) never reach them.
    dns = next(rule for rule in policy["spec"]["egress"] if rule.get("to"))
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


# ------------------------------------------------------------------------------------------------ Argo CD


def _applications(kubectl: str) -> dict[str, dict[str, Any]]:
    return {a["metadata"]["name"]: a for a in render(kubectl, K8S / "argocd") if a["kind"] == "Application"}


def _project(kubectl: str) -> dict[str, Any]:
    return one(render(kubectl, K8S / "argocd"), "AppProject", "refinery")


def test_argocd_watches_the_repository_the_cluster_configurations_push_to(kubectl: str) -> None:
    """One repository URL: every Application's sources, the AppProject's allowed sources and the
    gitops.repository of every cluster configuration (promotion pushes there)."""
    from refinery.config import read_config

    watched = set()
    for app in _applications(kubectl).values():
        sources = app["spec"].get("sources") or [app["spec"]["source"]]
        watched |= {s["repoURL"] for s in sources}
    allowed = set(_project(kubectl)["spec"]["sourceRepos"])
    # The run configurations of a cluster (state_dir: null); configs/ also holds other files (schedules).
    cluster = [
        read_config(path)
        for path in sorted(CONFIGS.glob("*.yaml"))
        if "state_dir" in (tree := yaml.safe_load(path.read_text()) or {}) and tree["state_dir"] is None
    ]
    pushed = {cfg.gitops.repository for cfg in cluster}
    assert pushed, "configs/ has a cluster configuration (configs/prod.yaml)"
    assert len(pushed) == 1, f"the cluster configurations push to several repositories: {pushed}"
    assert watched == pushed, f"Argo CD watches {watched}, the configurations push to {pushed}"
    assert allowed == pushed, f"the AppProject allows {allowed}, the configurations push to {pushed}"


def test_argocd_application_per_overlay_and_one_for_mlflow(kubectl: str) -> None:
    apps = _applications(kubectl)
    assert set(apps) == {f"refinery-{o}" for o in OVERLAYS} | {"refinery-mlflow"}
    for name, app in apps.items():
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert app["metadata"]["namespace"] == "argocd"
        assert app["spec"]["project"] == "refinery", name
        source = app["spec"]["source"]
        # Paths are inside the GitOps repository, which holds this tree under k8s/.
        assert (REPO_ROOT / source["path"] / "kustomization.yaml").is_file(), name
        assert source["targetRevision"] == "main"
        target = kustomization(source["path"].removeprefix("k8s/"))["namespace"]
        assert app["spec"]["destination"] == {"server": "https://kubernetes.default.svc", "namespace": target}
        assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
    for overlay in OVERLAYS:
        app = apps[f"refinery-{overlay}"]
        assert app["spec"]["source"]["path"] == f"k8s/overlays/{overlay}"
        # Argo CD neither diffs nor syncs the replicas the HorizontalPodAutoscaler sets.
        assert {
            "group": "apps",
            "kind": "Deployment",
            "name": "refinery-serving",
            "jsonPointers": ["/spec/replicas"],
        } in app["spec"]["ignoreDifferences"]
        assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert apps["refinery-mlflow"]["spec"]["source"]["path"] == "k8s/mlflow"
    automated = {"prune": True, "selfHeal": True}
    assert apps["refinery-dev"]["spec"]["syncPolicy"]["automated"] == automated
    assert apps["refinery-staging"]["spec"]["syncPolicy"]["automated"] == automated
    assert "automated" not in apps["refinery-prod"]["spec"]["syncPolicy"]
    assert "automated" not in apps["refinery-mlflow"]["spec"]["syncPolicy"]


def test_appproject_allows_the_four_namespaces_and_exactly_the_kinds_they_receive(kubectl: str) -> None:
    spec = _project(kubectl)["spec"]
    destinations = {(d["server"], d["namespace"]) for d in spec["destinations"]}
    in_cluster = "https://kubernetes.default.svc"
    expected = {(in_cluster, f"refinery-{o}") for o in OVERLAYS} | {(in_cluster, "mlflow")}
    assert destinations == expected
    for app in _applications(kubectl).values():
        destination = app["spec"]["destination"]
        assert (destination["server"], destination["namespace"]) in destinations
    synced = {
        (o["apiVersion"].rpartition("/")[0], o["kind"])
        for path in [*(f"overlays/{o}" for o in OVERLAYS), "mlflow"]
        for o in render(kubectl, K8S / path)
    }
    allowed = {(g["group"], g["kind"]) for g in spec["namespaceResourceWhitelist"]}
    assert synced == allowed
    assert spec["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]


# -------------------------------------------------------------------------- pipeline storage and access


def runs_namespace() -> str:
    """Where Kubeflow Pipelines executes refinery's runs: the profile of a multi-user deployment, else
    `kubeflow` (standalone, single-user)."""
    return prod_config().get("kfp", {}).get("namespace") or "kubeflow"


@pytest.mark.parametrize("directory", ["platform", "monitor"])
def test_platform_and_monitor_live_where_the_runs_execute(kubectl: str, directory: str) -> None:
    assert kustomization(directory)["namespace"] == runs_namespace()
    assert {o["metadata"]["namespace"] for o in render(kubectl, K8S / directory)} == {runs_namespace()}
    policy = one(render(kubectl, K8S / "mlflow"), "NetworkPolicy")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": runs_namespace()}}} in peers


def test_platform_holds_the_volumes_the_finetune_step_mounts(kubectl: str) -> None:
    objects = render(kubectl, K8S / "platform")
    finetune = prod_config()["resources"]["prod"]["finetune"]
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == {finetune["checkpoint_pvc"], finetune["model_cache_pvc"]}
    for claim in claims.values():
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["resources"]["requests"]["storage"].endswith("Gi")
    assert {o["metadata"]["namespace"] for o in objects} == {kustomization("platform")["namespace"]}


@pytest.mark.parametrize("directory", ["platform"])
def test_roles_are_least_privilege_and_bound_to_their_own_service_account(
    kubectl: str, directory: str
) -> None:
    objects = render(kubectl, K8S / directory)
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    namespace = kustomization(directory)["namespace"]
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert roles and len(bindings) == len(roles)
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] in roles
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": binding["subjects"][0]["name"], "namespace": namespace}
        ]
        assert binding["subjects"][0]["name"] in accounts
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
                # Named objects only, and only read.
                assert rule.get("resourceNames"), rule
                assert rule["verbs"] == ["get"], rule


def test_the_monitor_may_start_runs_through_the_kfp_api_and_nothing_else(kubectl: str) -> None:
    objects = render(kubectl, K8S / "platform")
    role = one(objects, "Role", "refinery-monitor-kfp")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {g for rule in role["rules"] for g in rule["apiGroups"]} == {"pipelines.kubeflow.org"}
    # refinery.orchestration.kfp_api: upload (or find) the pipeline version, find or create the
    # experiment, create the run and follow it.
    assert {("runs", "create"), ("experiments", "create"), ("pipelines/versions", "create")} <= granted
    assert not {(r, v) for r, v in granted if v not in {"get", "list", "create"}}
    binding = next(
        b for b in objects if b["kind"] == "RoleBinding" and b["roleRef"]["name"] == "refinery-monitor-kfp"
    )
    [subject] = binding["subjects"]
    account = one(objects, "ServiceAccount", subject["name"])
    assert account["automountServiceAccountToken"] is False


# ------------------------------------------------------------------------------------------ the monitor


def test_monitor_cronjob_runs_refinery_monitor_with_its_config_secrets_and_kfp_token(kubectl: str) -> None:
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH

    objects = render(kubectl, K8S / "monitor")
    cron = one(objects, "CronJob", "refinery-monitor")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["successfulJobsHistoryLimit"] <= 5
    assert 0 < spec["failedJobsHistoryLimit"] <= 10
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    # The identity k8s/platform gives the monitor (its KFP Role), not one of its own.
    assert not [o for o in objects if o["kind"] in {"ServiceAccount", "Role", "RoleBinding"}]
    one(render(kubectl, K8S / "platform"), "ServiceAccount", pod["serviceAccountName"])
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    [c] = pod["containers"]
    assert c["args"][:3] == ["monitor", "-c", "/etc/refinery/config.yaml"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["config"]["mountPath"] == "/etc/refinery"
    assert volumes["config"]["configMap"]["name"] == "refinery-config"
    assert volumes["config"]["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]
    # The kfp client's in-cluster credentials: a token projected for KFP's audience, where it reads it.
    env = {e["name"]: e.get("value") for e in c["env"]}
    token_path = Path(env[KF_PIPELINES_SA_TOKEN_ENV])
    assert str(token_path) == KF_PIPELINES_SA_TOKEN_PATH
    assert mounts["kfp-token"]["mountPath"] == str(token_path.parent)
    [source] = volumes["kfp-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert source["serviceAccountToken"]["path"] == token_path.name
    # The KFP API's address is the configuration's (kfp.host): nothing here overrides it.
    kfp = prod_config()["kfp"]
    assert not {"REFINERY_KFP_HOST", "KF_PIPELINES_ENDPOINT"} & set(env)
    host = urlsplit(kfp["host"])
    policy = one(objects, "NetworkPolicy")
    kfp_peers = [
        rule["to"][0]
        for rule in policy["spec"]["egress"]
        if {"port": host.port, "protocol": "TCP"} in rule["ports"] and rule.get("to")
    ]
    assert kfp_peers == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": host.hostname.split(".")[1]}
            },
            "podSelector": {"matchLabels": {"app": host.hostname.split(".")[0]}},
        }
    ]
    # The Secrets of the services it calls, by the names the configuration gives them; PGPASSWORD of the
    # inference log (refinery-feedback) last, so that it wins over a registry's.
    credentials = prod_config()["resources"]["prod"]["credentials"]
    secrets = [s["secretRef"]["name"] for s in c["envFrom"]]
    assert secrets == [credentials["registry"], credentials["object_store"], credentials["inference_log"]]
    # Exit code 1 (drift fired a retrain) fails the Job at once, the signal the drift alert reads.
    [fired, *_] = job["podFailurePolicy"]["rules"]
    assert "--exit-code" in c["args"]
    assert fired == {
        "action": "FailJob",
        "onExitCodes": {"containerName": c["name"], "operator": "In", "values": [1]},
    }


def test_monitor_alerts_read_the_cronjob_through_kube_state_metrics(kubectl: str) -> None:
    objects = render(kubectl, K8S / "monitor")
    rule = one(objects, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"RefineryDriftRetrainFired", "RefineryMonitorFailing", "RefineryMonitorNotRunning"}
    cron = one(objects, "CronJob")["metadata"]["name"]
    for alert in alerts.values():
        assert f'"{cron}"' in alert["expr"]
    assert "kube_job_failed" in alerts["RefineryDriftRetrainFired"]["expr"]
    assert "kube_job_status_failed" in alerts["RefineryMonitorFailing"]["expr"]


# --------------------------------------------------------------------------------------------- monitoring


def _serving_alerts(kubectl: str) -> dict[str, dict[str, Any]]:
    rule = one(render(kubectl, K8S / "platform"), "PrometheusRule")
    groups = rule["spec"]["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def _threshold(expr: str) -> float:
    """The constant an alert compares its expression with (`... > 1`)."""
    match = re.search(r">\s*([0-9.]+)\s*$", expr)
    assert match, f"no `> threshold` at the end of {expr!r}"
    return float(match.group(1))


def test_serving_alerts_cover_errors_latency_overload_and_the_inference_log(kubectl: str) -> None:
    from refinery.config import read_config
    from refinery.serving.metrics import DURATION_BUCKETS

    alerts = _serving_alerts(kubectl)
    assert {
        "RefineryServingDown",
        "RefineryServingErrorRate",
        "RefineryServingLatencyP99",
        "RefineryServingOverloaded",
        "RefineryInferenceLogWriteFailures",
        "RefineryInferenceLogBacklog",
    } <= set(alerts)
    errors = alerts["RefineryServingErrorRate"]["expr"]
    assert "bentoml_service_request_total" in errors and 'http_response_code=~"5.."' in errors
    # The service's own histogram, per route; the threshold is a bucket bound, so the estimate is exact
    # there (histogram_quantile interpolates inside a bucket).
    latency = alerts["RefineryServingLatencyP99"]["expr"]
    assert "histogram_quantile(0.99" in latency
    assert "refinery_request_duration_seconds_bucket" in latency
    assert re.search(r"by \([^)]*\ble\b[^)]*\)", latency)
    assert _threshold(latency) in DURATION_BUCKETS
    overloaded = alerts["RefineryServingOverloaded"]["expr"]
    assert "refinery_requests_rejected_total" in overloaded and 'reason="overloaded"' in overloaded
    failures = alerts["RefineryInferenceLogWriteFailures"]
    assert "refinery_inference_log_write_failures_total" in failures["expr"]
    # 80% of the queue's capacity in the cluster configuration (serving.log_queue_rows), per pod, for 5
    # minutes; the gauge sums a pod's workers, so with several the alert warns earlier, never later.
    backlog = alerts["RefineryInferenceLogBacklog"]
    assert "refinery_inference_log_queue_rows" in backlog["expr"]
    assert re.search(r"by \(namespace, pod\)", backlog["expr"])
    serving = read_config(PROD_CONFIG).serving
    assert _threshold(backlog["expr"]) == 0.8 * serving.log_queue_rows
    assert f"serving.log_queue_rows = {serving.log_queue_rows}" in backlog["annotations"]["description"]
    assert backlog["for"] == "5m"
    # A failed write is retried, not a refused request: the text must not say otherwise.
    description = failures["annotations"]["description"]
    assert "retried" in description and "were refused" not in description
    for name, alert in alerts.items():
        expr = alert["expr"]
        # The ServiceMonitor's job (the Service's name), and the namespace kept for routing: every
        # aggregation names it in its `by`, none aggregates it away.
        assert 'job="refinery-serving"' in expr, name
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            assert "namespace" in {label.strip() for label in clause.split(",")}, (name, clause)
        assert not re.search(r"\b(sum|avg|min|max|count|topk|bottomk|quantile)\s*\(", expr), (
            f"{name} aggregates without `by (namespace, ...)`"
        )
        assert "without" not in expr, name
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name


# ------------------------------------------------------------------------------------ Grafana dashboard

DASHBOARD = K8S / "platform" / "grafana-dashboard.json"
# kubectl apply (client side) keeps the whole object in an annotation of at most 256 KiB.
DASHBOARD_MAX_BYTES = 200_000
# A name inside PromQL (series, function, label or keyword), taken whole: a recorded series such as
# `namespace:refinery_x:rate5m` keeps its colons. String literals are removed before it is applied.
_SERIES = re.compile(r"(?<![\w:])[a-zA-Z_:][\w:]*")


def _dashboard_config_map(kubectl: str) -> dict[str, Any]:
    objects = render(kubectl, K8S / "platform")
    labelled = [o for o in objects if o["metadata"].get("labels", {}).get("grafana_dashboard")]
    [config_map] = [o for o in labelled if o["kind"] == "ConfigMap"]
    return config_map


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _refinery_series(expr: str) -> set[str]:
    # Strip string literals first: label values (`job="refinery-serving"`) are not series.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {name for name in _SERIES.findall(bare) if "refinery_" in name}


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar(kubectl: str) -> None:
    """k8s/platform ships the dashboard once per cluster, as the ConfigMap kube-prometheus-stack's
    Grafana sidecar loads (label grafana_dashboard: "1"), under a name without a hash suffix."""
    config_map = _dashboard_config_map(kubectl)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["name"] == "refinery-grafana-dashboard"
    generators = kustomization("platform")["configMapGenerator"]
    [generator] = [g for g in generators if g["name"] == config_map["metadata"]["name"]]
    assert generator["options"]["disableNameSuffixHash"] is True
    [(key, text)] = config_map["data"].items()
    dashboard = json.loads(text)
    # The sidecar writes each key as a file into one folder: the key is named after the uid.
    assert key == f"{dashboard['uid']}.json"
    assert text == DASHBOARD.read_text()
    assert len(text.encode()) < DASHBOARD_MAX_BYTES
    # Once per cluster: no overlay ships a second copy with the same uid.
    for overlay in OVERLAYS:
        assert not [
            o
            for o in render(kubectl, K8S / "overlays" / overlay)
            if o["metadata"].get("labels", {}).get("grafana_dashboard")
        ], overlay


def test_the_dashboard_is_templated_and_every_panel_queries_the_chosen_namespace() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "refinery-serving"
    assert dashboard["schemaVersion"] >= 39  # Grafana 10.4 and later
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    assert variables["namespace"]["datasource"]["uid"] == "${datasource}"
    assert 'job="refinery-serving"' in str(variables["namespace"]["query"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert len(panels) >= 12
    units = set()
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title
            assert target["expr"].strip(), title
            assert 'namespace="$namespace"' in target["expr"], title
        # A heatmap's unit is its y axis'.
        heatmap_axis = panel.get("options", {}).get("yAxis", {})
        unit = panel["fieldConfig"]["defaults"].get("unit") or heatmap_axis.get("unit")
        assert unit, f"{title} has no unit"
        units.add(unit)
    assert {"s", "reqps", "short"} <= units
    exprs = "\n".join(t["expr"] for p in panels for t in p["targets"])
    for series in ("bentoml_service_request_total", "bentoml_service_request_in_progress"):
        assert series in exprs
    for series in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes"):
        assert re.search(series + r'\{[^}]*container="serving"', exprs), series


def test_the_dashboard_shows_the_alerts_thresholds(kubectl: str) -> None:
    alerts = _serving_alerts(kubectl)
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}

    def steps(title: str) -> set[float]:
        defaults = panels[title]["fieldConfig"]["defaults"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "line", title
        return {s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None}

    latency, backlog = alerts["RefineryServingLatencyP99"], alerts["RefineryInferenceLogBacklog"]
    assert _threshold(latency["expr"]) in steps("Latency p50 / p95 / p99 by endpoint")
    assert _threshold(backlog["expr"]) in steps("Inference-log queue rows per pod")


def test_every_refinery_series_the_dashboard_and_alerts_name_is_one_the_service_exposes(kubectl: str) -> None:
    """The series names of refinery.serving.metrics are the contract: a renamed series would leave a
    panel empty and an alert silent, with nothing failing."""
    from refinery.serving.metrics import EXPOSED

    rules = [
        r
        for directory in ("platform", "monitor")
        for o in render(kubectl, K8S / directory)
        if o["kind"] == "PrometheusRule"
        for g in o["spec"]["groups"]
        for r in g["rules"]
    ]
    recorded = {r["record"] for r in rules if "record" in r}
    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {}
    for where, exprs in (
        ("the dashboard", _dashboard_exprs(dashboard)),
        ("the alerts", [str(r["expr"]) for r in rules]),
    ):
        names = set().union(*(_refinery_series(e) for e in exprs))
        used[where] = names
        # A recorded series (level:metric:operations) is defined by a rule here; every other is exposed.
        unknown = {n for n in names if n not in (recorded if ":" in n else EXPOSED)}
        assert not unknown, f"{where}: series refinery does not expose: {sorted(unknown)}"
    # The regular expression finds what it should (not vacuous), and the dashboard shows every series.
    assert {"refinery_inference_log_queue_rows", "refinery_requests_rejected_total"} <= used["the alerts"]

    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count|total)$", "", name)

    assert {family(n) for n in used["the dashboard"]} == {family(n) for n in EXPOSED}
    assert _refinery_series('x{job="refinery-serving"} + ns:refinery_y:rate5m') == {"ns:refinery_y:rate5m"}


# ------------------------------------------------------------------------------------------------- MLflow


def test_mlflow_server_is_where_the_cluster_configuration_looks_for_it(kubectl: str) -> None:
    objects = render(kubectl, K8S / "mlflow")
    registry = prod_config()["registry"]
    uri = urlsplit(registry["tracking_uri"])
    service_name, namespace = uri.hostname.split(".")[:2]
    service = one(objects, "Service")
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == (service_name, namespace)
    assert service["spec"]["ports"][0]["port"] == uri.port
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["command"] == ["mlflow"]
    args = dict(a.split("=", 1) for a in c["args"][1:] if "=" in a)
    assert c["args"][0] == "server"
    assert args["--default-artifact-root"] == registry["artifact_location"]
    assert args["--port"] == str(uri.port)
    # MLflow answers 403 to a Host header it does not allow: the one clients send must be allowed.
    assert uri.netloc in args["--allowed-hosts"].split(",")
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlflow-backend-store", "key": "uri"}
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"  # exempt from MLflow's host check
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [uri.port]


# ----------------------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("directory", DEPLOYED)
def test_every_pod_meets_the_restricted_pod_security_standard(kubectl: str, directory: str) -> None:
    for where, pod in pod_specs(render(kubectl, K8S / directory)):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), where
        assert all("hostPath" not in v for v in pod.get("volumes", [])), where
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where


# ------------------------------------------------------------------------------------- Secrets, documented


def test_the_readme_documents_every_secret_by_its_keys() -> None:
    """Every Secret the configuration names, with the keys the code reads (refinery.credentials), is in
    k8s/README.md's `kubectl create secret` commands; as are those the manifests read."""
    from refinery.credentials import SERVICES

    readme = (K8S / "README.md").read_text()
    commands = re.findall(r"kubectl -n \S+ create secret [^\n]*(?:\n\s+--[^\n]*)*", readme)
    created: dict[str, str] = {}
    for command in commands:
        name = re.search(r"create secret (?:generic|docker-registry) (\S+)", command)
        assert name, command
        created[name.group(1)] = created.get(name.group(1), "") + command
    credentials = prod_config()["resources"]["prod"]["credentials"]
    for service, secret in credentials.items():
        assert secret in created, f"k8s/README.md creates no Secret {secret} ({service})"
        if service in SERVICES:
            for key in SERVICES[service].names:
                assert key in readme, f"k8s/README.md does not name key {key} of {secret}"
            for key in SERVICES[service].required:
                assert f"{key}=" in created[secret], f"the command creating {secret} lacks {key}"
    for hf in prod_config()["resources"]["prod"]["finetune"]["secrets"]:
        assert f"--from-literal={hf['key']}=" in created[hf["secret"]]
    assert "--from-literal=url=" in created["refinery-inference-log"]
    assert "--from-literal=uri=" in created["mlflow-backend-store"]


# ------------------------------------------------------------------------- schemas: built-in and custom


@functools.cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    schemas = {p.name: yaml.safe_load(p.read_text()) for p in sorted(CRD_SCHEMAS.glob("*.schema.yaml"))}
    registry: Registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    validators = {}
    for name, schema in schemas.items():
        if name == "common.schema.yaml":
            continue
        api_version = schema["properties"]["apiVersion"]["const"]
        kind = schema["properties"]["kind"]["const"]
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[(api_version, kind)] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def validate_custom_resource(obj: dict[str, Any]) -> None:
    validator = _crd_validators()[(obj["apiVersion"], obj["kind"])]
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    where = f"{obj['kind']} {obj['metadata'].get('name')}"
    assert not errors, "\n".join(
        f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def validate_builtin(obj: dict[str, Any], version: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {path}: {exc.message}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_rendered_objects_validate_strictly_against_their_schemas(
    kubectl: str, directory: str, version: str
) -> None:
    for obj in render(kubectl, K8S / directory):
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            validate_custom_resource(obj)
        else:
            validate_builtin(obj, version)


def test_crd_schemas_cover_the_custom_resources_and_are_strict() -> None:
    assert set(_crd_validators()) == CRD_KINDS

    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                yield where
            for key, value in node.items():
                yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}[{i}]")

    for path in sorted(CRD_SCHEMAS.glob("*.schema.yaml")):
        assert not list(walk(yaml.safe_load(path.read_text()), path.name)), (
            "levels without additionalProperties: false"
        )
        assert "upstream" in path.read_text() or path.name == "common.schema.yaml", (
            f"{path.name} names no upstream"
        )


@pytest.mark.parametrize(
    ("directory", "kind", "where", "key", "value", "message"),
    [
        # A misspelt field, at several depths.
        ("argocd", "Application", "spec.syncPolicy", "automatd", {}, "automatd"),
        ("argocd", "Application", "spec.ignoreDifferences.0", "jsonPointer", ["/x"], "jsonPointer"),
        ("argocd", "AppProject", "spec", "sourceRepo", ["x"], "sourceRepo"),
        ("argocd", "AppProject", "spec.destinations.0", "namespaces", "x", "namespaces"),
        ("overlays/dev", "ServiceMonitor", "spec.endpoints.0", "intervall", "30s", "intervall"),
        ("platform", "PrometheusRule", "spec.groups.0.rules.0", "four", "5m", "four"),
        # A wrong type or value.
        ("argocd", "Application", "spec.syncPolicy.retry", "limit", "5", "'5'"),
        ("overlays/dev", "ServiceMonitor", "spec.endpoints.0", "interval", "30 s", "30 s"),
        # Both alert and record.
        ("platform", "PrometheusRule", "spec.groups.0.rules.0", "record", "x", "valid under each"),
    ],
)
def test_crd_schemas_reject_what_the_crds_reject(
    kubectl: str, directory: str, kind: str, where: str, key: str, value: Any, message: str
) -> None:
    obj = next(o for o in render(kubectl, K8S / directory) if o["kind"] == kind)
    node: Any = obj
    for part in where.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[key] = value
    with pytest.raises(AssertionError, match=re.escape(message)):
        validate_custom_resource(obj)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_schemas_are_strict(kubectl: str, version: str) -> None:
    deployment = one(render(kubectl, K8S / "overlays" / "dev"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(pytest.fail.Exception, match="livenesProbe"):
        validate_builtin(deployment, version)


# ------------------------------------------------------------------------------------------------ checkov


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.is_file():
        pytest.fail(
            f"checkov is not installed at {CHECKOV.relative_to(REPO_ROOT)}: run `make checkov` (`make test` does)"
        )
    return CHECKOV


def test_checkov_reports_no_failed_check_on_what_a_cluster_receives(
    kubectl: str, checkov: Path, tmp_path: Path
) -> None:
    for directory in DEPLOYED:
        objects = render(kubectl, K8S / directory)
        (tmp_path / f"{directory.replace('/', '-')}.yaml").write_text(
            yaml.safe_dump_all(objects, sort_keys=False)
        )
    # --skip-download: offline, no call to checkov's platform.
    proc = subprocess.run(
        [
            str(checkov),
            "--skip-download",
            "--framework",
            "kubernetes",
            "--directory",
            str(tmp_path),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 1), f"checkov failed to run:\n{proc.stderr[-4000:]}"
    [report] = [r for r in _as_list(json.loads(proc.stdout)) if r["check_type"] == "kubernetes"]
    summary, results = report["summary"], report["results"]
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in results["failed_checks"]]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= sum(len(render(kubectl, K8S / d)) for d in DEPLOYED) - 1
    for check in results["skipped_checks"]:
        assert check["check_id"] in CHECKOV_SKIPS, (
            f"{check['check_id']} skipped without an entry in CHECKOV_SKIPS"
        )
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.split()) >= 6, (
            f"{check['check_id']} on {check['resource']}: the reason is too thin: {reason!r}"
        )


def _as_list(report: Any) -> list[dict[str, Any]]:
    return report if isinstance(report, list) else [report]

"""The k8s/ tree: every kustomization renders, and the rendered objects keep the house rules.

Rendering uses the real `kubectl kustomize` (offline). Field names of the rendered objects are checked
against the Kubernetes API models shipped with the `kubernetes` Python client, which catches misspelt
or misplaced fields without a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
RELEASE_KEYS = (
    "REFINERY_MODEL_NAME",
    "REFINERY_MODEL_VERSION",
    "REFINERY_BENTO_TAG",
    "REFINERY_BENTO_URI",
    "REFINERY_BENTO_SHA256",
)
CONFIGS = REPO_ROOT / "configs"
# kustomize fields that are deprecated (patchesStrategicMerge in particular is banned by STYLE.md).
DEPRECATED_FIELDS = ("patchesStrategicMerge", "patchesJson6902", "bases", "commonLabels", "vars", "imageTags")


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (CI installs it); cannot render the kustomize overlays")
    return path


def render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["serving"]
    return containers[0]


def test_the_tree_has_base_dev_prod_and_argocd() -> None:
    assert OVERLAYS == ["dev", "prod"]
    assert set(KUSTOMIZATIONS) == {"base", "overlays/dev", "overlays/prod", "argocd"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_kustomization_renders(kubectl: str, directory: str) -> None:
    assert render(kubectl, K8S / directory)


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
    assert deployment["spec"]["replicas"] == 1


def test_prod_overlay_patches_replicas_and_resources(kubectl: str) -> None:
    kustomization = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    assert kustomization["patches"], "prod sizes the Deployment with `patches:`"
    objects = render(kubectl, K8S / "overlays" / "prod")
    assert {o["metadata"].get("namespace") for o in objects} == {"refinery-prod"}
    deployment, base = one(objects, "Deployment"), one(render(kubectl, K8S / "base"), "Deployment")
    assert deployment["spec"]["replicas"] == 3
    prod_res, base_res = container(deployment)["resources"], container(base)["resources"]
    assert prod_res != base_res
    assert prod_res["requests"]["memory"] == "2Gi"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_name_images_only_by_digest(overlay: str) -> None:
    """No overlay names an image by a tag, which can move: the seed names none (nothing released), and
    promotion writes the serving image by digest (tests/unit/gitops, tests/cluster)."""
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    for entry in kustomization.get("images") or []:
        assert "newTag" not in entry, f"{overlay}: image {entry} is named by tag"
        assert str(entry.get("digest", "")).startswith("sha256:"), f"{overlay}: image {entry} has no digest"


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


def test_argocd_watches_the_repository_the_cluster_configurations_push_to(kubectl: str) -> None:
    from refinery.config import read_config

    apps = render(kubectl, K8S / "argocd")
    watched = {a["spec"]["source"]["repoURL"] for a in apps}
    cluster = [read_config(path) for path in sorted(CONFIGS.glob("*.yaml"))]
    pushed = {cfg.gitops.repository for cfg in cluster if not cfg.embedded}
    assert pushed, "configs/ has a cluster configuration (configs/prod.yaml)"
    assert watched == pushed, f"Argo CD watches {watched}, the configurations push to {pushed}"


def test_argocd_application_per_overlay(kubectl: str) -> None:
    apps = {a["metadata"]["name"]: a for a in render(kubectl, K8S / "argocd")}
    assert set(apps) == {f"refinery-{o}" for o in OVERLAYS}
    assert len({a["spec"]["source"]["repoURL"] for a in apps.values()}) == 1
    for overlay in OVERLAYS:
        app = apps[f"refinery-{overlay}"]
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert app["kind"] == "Application"
        assert app["metadata"]["namespace"] == "argocd"
        source = app["spec"]["source"]
        # Paths are inside the GitOps repository, which holds this tree under k8s/.
        assert source["path"] == f"k8s/overlays/{overlay}"
        assert (REPO_ROOT / source["path"] / "kustomization.yaml").is_file()
        assert source["targetRevision"] == "main"
        namespace = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())[
            "namespace"
        ]
        assert app["spec"]["destination"]["namespace"] == namespace
    assert apps["refinery-dev"]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "automated" not in apps["refinery-prod"]["spec"]["syncPolicy"]


_MODELS = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "ConfigMap": "V1ConfigMap",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
}
_SCALARS = {"str", "int", "bool", "float", "object", "datetime", "date"}


def _unknown_fields(value: Any, type_name: str, where: str) -> list[str]:
    import kubernetes.client.models as models

    if type_name in _SCALARS or type_name.startswith("dict("):
        return []
    if type_name.startswith("list["):
        assert isinstance(value, list), f"{where}: expected a list"
        return [
            p for i, item in enumerate(value) for p in _unknown_fields(item, type_name[5:-1], f"{where}[{i}]")
        ]
    model = getattr(models, type_name)
    assert isinstance(value, dict), f"{where}: expected a mapping for {type_name}"
    types = {json_key: model.openapi_types[attr] for attr, json_key in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in types:
            problems.append(f"{where}.{key}")
        else:
            problems += _unknown_fields(item, types[key], f"{where}.{key}")
    return problems


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_rendered_objects_use_only_known_kubernetes_fields(kubectl: str, directory: str) -> None:
    pytest.importorskip(
        "kubernetes", reason="the kubernetes client (a kfp dependency) carries the API models"
    )
    for obj in render(kubectl, K8S / directory):
        assert obj["kind"] in _MODELS, f"{directory}: no schema check for kind {obj['kind']}"
        assert _unknown_fields(obj, _MODELS[obj["kind"]], obj["kind"]) == []

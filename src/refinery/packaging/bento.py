"""Packaging a model as a Bento: build the serving Bento around it and publish it to the Bento store.

The Bento is built in a scratch BentoML home, exported as one ``.bento`` archive (service, refinery
sources, the model, pinned requirements) and published to ``packaging.bento_store``
(:mod:`refinery.packaging.store`): a folder in the embedded default, object storage on a cluster.
Promotion and serving read it from there, never from the disk it was built on. Its version is derived
from the model's files and the build context (``v<model version>-<hash>``), so packaging the same model
with the same release again finds the Bento already stored and builds nothing: a retried step leaves no
second Bento.

The build runs offline: ``serving/bentofile.yaml`` turns off BentoML's package locking (which resolves
against PyPI) and lists the distributions the service imports; packaging pins them, and everything they
depend on, to the versions installed where the Bento is built (the project's pinned environment, where
the model was trained and tested), so an image built from the Bento installs exactly those. The
refinery sources the service imports, and only those (:func:`served_sources`: no training code, no demo
data generator), are copied next to ``service.py``, so the Bento holds everything but its pip packages.

BentoML reads ``BENTOML_HOME`` once per process and caches the service module it imports, so the
BentoML part (build and export, or import) runs in a child process with its own ``BENTOML_HOME``:
:func:`package` and :func:`fetch` can be called any number of times, with different homes, from one
process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from refinery.errors import PackagingError
from refinery.results import Record, write_json

if TYPE_CHECKING:
    from refinery.config import RunConfig

logger = logging.getLogger(__name__)

BENTOFILE = "bentofile.yaml"
BUILD_TIMEOUT_S = 600
_TAG_PART = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
_TAG_MAX = 63
# A requirement that already says which versions it wants (or where to get it from).
_SPECIFIED = re.compile(r"[<>=!~@ ;]")


@dataclass(frozen=True)
class PackageResult(Record):
    """A Bento in the Bento store and the model it serves.

    Attributes:
        bento_tag: ``NAME:VERSION`` of the Bento.
        model_tag: The BentoML model inside it.
        bento_uri: Where the exported Bento is stored.
        bento_sha256: SHA-256 of the stored file, checked by whoever fetches it.
        reused: True when the Bento was already stored and nothing was built.
    """

    bento_tag: str
    model_tag: str
    bento_uri: str
    bento_sha256: str
    reused: bool = False

    def tags(self) -> dict[str, str]:
        """The registry version tags that record this Bento (:meth:`from_tags` reads them back)."""
        return {
            BENTO_TAG: self.bento_tag,
            BENTO_URI: self.bento_uri,
            BENTO_SHA256: self.bento_sha256,
            MODEL_TAG: self.model_tag,
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> PackageResult | None:
        """The Bento a registry version's tags record, or None when it was never packaged."""
        if not all(tags.get(key) for key in (BENTO_TAG, BENTO_URI, BENTO_SHA256)):
            return None
        return cls(tags[BENTO_TAG], tags.get(MODEL_TAG, ""), tags[BENTO_URI], tags[BENTO_SHA256])


# Registry version tags naming the version's Bento.
BENTO_TAG, BENTO_URI, BENTO_SHA256, MODEL_TAG = "bento_tag", "bento_uri", "bento_sha256", "bento_model_tag"


def _tag_part(value: str, what: str) -> str:
    part = value.lower()
    if len(part) > _TAG_MAX or not _TAG_PART.match(part):
        raise PackagingError(
            f"{what} {value!r} cannot be a BentoML tag: at most {_TAG_MAX} characters, lowercase letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return part


def _version_part(model_version: str) -> str:
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", model_version.lower()).strip("-._")
    if not cleaned:
        raise PackagingError(f"model version {model_version!r} has no letters or digits to put in a tag")
    return cleaned[:32]


def directory_digest(root: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under ``root``, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _check_model_dir(model_dir: Path, labels: tuple[str, ...]) -> None:
    from refinery.modeling import has_safetensors

    if not model_dir.is_dir():
        raise PackagingError(f"model directory not found: {model_dir}")
    if not has_safetensors(model_dir):
        raise PackagingError(f"{model_dir} holds no model.safetensors; only safetensors models are packaged")
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackagingError(f"{config_path} is missing; not a save_pretrained model directory") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PackagingError(f"{config_path} cannot be read: {exc}") from None
    id2label = config.get("id2label") or {}
    try:
        model_labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    except (TypeError, ValueError):
        raise PackagingError(f"{config_path}: id2label {id2label!r} is not keyed by class index") from None
    if model_labels != labels:
        raise PackagingError(
            f"{config_path}: the model's labels {list(model_labels)} differ from data.labels {list(labels)}"
        )


def read_build_spec(service_dir: Path) -> dict[str, Any]:
    """Read ``bentofile.yaml`` from the service folder and check the keys packaging relies on.

    Raises:
        PackagingError: The folder, ``service.py`` or the bentofile is missing, or the bentofile is not a
            mapping naming the service.
    """
    if not service_dir.is_dir():
        raise PackagingError(f"service folder not found: {service_dir} (packaging.service_dir)")
    path = service_dir / BENTOFILE
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackagingError(f"{path} is missing; the service folder needs its build spec") from None
    except (OSError, yaml.YAMLError) as exc:
        raise PackagingError(f"{path} cannot be read: {exc}") from None
    if not isinstance(spec, dict) or not spec.get("service"):
        raise PackagingError(f"{path}: expected a mapping with a 'service' entry")
    module = str(spec["service"]).partition(":")[0]
    if not (service_dir / f"{module}.py").is_file():
        raise PackagingError(
            f"{path}: service {spec['service']!r} names {module}.py, which is not in {service_dir}"
        )
    python = spec.get("python") or {}
    if not isinstance(python, dict) or python.get("lock_packages") is not False:
        raise PackagingError(
            f"{path}: python.lock_packages must be false (locking needs PyPI; builds are offline)"
        )
    if python.get("requirements_txt"):
        raise PackagingError(
            f"{path}: use python.packages, not requirements_txt (packages are pinned at build)"
        )
    return spec


def pin_packages(names: list[str]) -> list[str]:
    """Pin each distribution to the version installed here, e.g. ``torch`` -> ``torch==2.13.0+cpu``.

    Entries that already carry a version specifier are kept as written.

    Raises:
        PackagingError: A named distribution is not installed.
    """
    pinned = []
    for entry in names:
        name = str(entry).strip()
        if _SPECIFIED.search(name):
            pinned.append(name)
            continue
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise PackagingError(
                f"python package {name!r} listed in {BENTOFILE} is not installed where the Bento is built"
            ) from None
    return pinned


def pin_dependency_closure(names: list[str], also_walk: tuple[str, ...] = ("bentoml",)) -> list[str]:
    """:func:`pin_packages` of ``names``, then every distribution they depend on, pinned the same way.

    Dependencies are read from the installed distributions' metadata, transitively; one whose
    environment marker does not hold here (another platform or Python, an extra nobody asked for) is
    left out. Entries that carry a version specifier are kept as written and not walked. The
    distributions in ``also_walk`` contribute their dependencies but no line of their own: BentoML adds
    its own pinned requirement to every Bento.

    Returns:
        The pinned ``names`` in their order, then their dependencies sorted by name.

    Raises:
        PackagingError: A named distribution, or a dependency of an installed one, is not installed.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pinned = pin_packages(names)
    listed = {canonicalize_name(Requirement(line).name) for line in pinned}
    listed |= {canonicalize_name(name) for name in also_walk}
    roots = [
        Requirement(str(n).strip()) for n in [*names, *also_walk] if not _SPECIFIED.search(str(n).strip())
    ]
    # (distribution, extras asked for, who needs it), walked depth first.
    todo = [(root.name, frozenset(root.extras), BENTOFILE) for root in roots]
    walked: set[tuple[str, frozenset[str]]] = set()
    dependencies: dict[str, str] = {}
    while todo:
        name, extras, needed_by = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in walked:
            continue
        walked.add((key, extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise PackagingError(
                f"{name}, needed by {needed_by}, is not installed where the Bento is built"
            ) from None
        pin = f"{key}=={dist.version}"
        if key not in listed:
            dependencies[key] = pin
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                raise PackagingError(
                    f"{pin} declares a requirement that cannot be parsed: {line!r}"
                ) from None
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((req.name, frozenset(req.extras), pin))
    return pinned + [dependencies[key] for key in sorted(dependencies)]


def served_sources(service_dir: Path) -> list[Path]:
    """The refinery sources the service in ``service_dir`` imports (its ``*.py`` files' import closure,
    :func:`refinery.packaging.closure.import_closure`), relative to the folder holding ``refinery/``."""
    import refinery
    from refinery.packaging.closure import import_closure

    return import_closure(sorted(service_dir.glob("*.py")), Path(refinery.__file__).parent)


def _prepare_build_context(service_dir: Path, spec: dict[str, Any], ctx: Path) -> None:
    """Copy the service folder and the refinery sources it imports into ``ctx`` and write the final
    bentofile."""
    import refinery

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copytree(service_dir, ctx, ignore=ignore, dirs_exist_ok=True)
    sources = Path(refinery.__file__).parent.parent
    for relative in served_sources(service_dir):
        (ctx / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / relative, ctx / relative)
    python = dict(spec.get("python") or {})
    python["packages"] = pin_dependency_closure(list(python.get("packages") or []))
    final = {**spec, "python": python}
    (ctx / BENTOFILE).write_text(yaml.safe_dump(final, sort_keys=False), encoding="utf-8")


def package(cfg: RunConfig, model_dir: Path, model_version: str, runtime: str = "torch") -> PackageResult:
    """Build the serving Bento around ``model_dir`` and publish it to ``packaging.bento_store``.

    The model is named ``cfg.registry.model_name`` with version ``v<model_version>-<digest>``, labelled
    with the registered name and version. The Bento is named ``<model_name>-service``; its version
    ``v<model_version>-<hash>`` hashes the model and the whole build context, so the same model packaged
    by the same release gets the same tag, and a Bento already in the store is reused, not rebuilt.

    Args:
        cfg: Resolved run configuration (``packaging``, ``registry.model_name``, ``data.labels``,
            ``model.max_length``).
        model_dir: The model directory (``save_pretrained`` output with safetensors weights).
        model_version: The registered version the model directory holds.
        runtime: What the service runs the model with (``torch``, or ``onnx-int8`` when ``model_dir``
            holds the int8 export), recorded with the model in the Bento.

    Returns:
        The Bento's tag, its model's tag, and where it is stored with its SHA-256.

    Raises:
        PackagingError: The model directory or build spec is unusable, BentoML failed, or the store
            cannot be read or written; the message names the file, the BentoML error or the store URI.
    """
    from refinery.packaging import store
    from refinery.serving import (
        MODEL_LABEL_NAME,
        MODEL_LABEL_VERSION,
        MODEL_METADATA_MAX_LENGTH,
        MODEL_METADATA_RUNTIME,
    )

    if not cfg.packaging.bento_store:
        raise PackagingError("packaging.bento_store is empty; load the configuration with load_config")
    model_dir = Path(model_dir)
    service_dir = Path(cfg.packaging.service_dir)
    name = _tag_part(cfg.registry.model_name, "registry.model_name")
    bento_name = _tag_part(f"{name}-service", "bento name")
    _check_model_dir(model_dir, tuple(cfg.data.labels))
    spec = read_build_spec(service_dir)
    digest = directory_digest(model_dir)
    version = _version_part(model_version)
    model_tag = f"{name}:v{version}-{digest[:12]}"

    with tempfile.TemporaryDirectory(prefix="refinery-bento-") as tmp:
        ctx = Path(tmp) / "context"
        _prepare_build_context(service_dir, spec, ctx)
        build = hashlib.sha256(f"{digest}\0{directory_digest(ctx)}".encode()).hexdigest()
        bento_tag = f"{bento_name}:v{version}-{build[:12]}"
        uri = store.bento_uri(cfg.packaging.bento_store, bento_tag)
        if store.exists(uri):
            logger.info("Bento %s is already in the store at %s", bento_tag, uri)
            return PackageResult(bento_tag, model_tag, uri, store.sha256(uri), reused=True)
        export = Path(tmp) / "export.bento"
        request = {
            "action": "build",
            "model_dir": str(model_dir),
            "model_tag": model_tag,
            "model_labels": {
                MODEL_LABEL_NAME: cfg.registry.model_name,
                MODEL_LABEL_VERSION: str(model_version),
            },
            "model_metadata": {
                MODEL_METADATA_MAX_LENGTH: cfg.model.max_length,
                MODEL_METADATA_RUNTIME: runtime,
                "labels": list(cfg.data.labels),
                "sha256": digest,
            },
            "build_ctx": str(ctx),
            "bento_tag": bento_tag,
            "bento_labels": {
                "model_name": cfg.registry.model_name,
                "model_version": str(model_version),
                "model_tag": model_tag,
            },
            "export_path": str(export),
        }
        logger.info("building Bento %s for model %s", bento_tag, model_tag)
        _in_child_process(request, Path(tmp) / "home", f"building the Bento for model {model_tag}")
        sha = store.file_sha256(export)
        store.publish(export, uri)
    logger.info("stored Bento %s at %s", bento_tag, uri)
    return PackageResult(bento_tag, model_tag, uri, sha)


def fetch(bento: PackageResult, home: Path) -> str:
    """Make a stored Bento servable from the BentoML home ``home``: download it, check its SHA-256 and
    import it, unless the home holds it already (a restarted server, a second ``refinery serve``).

    Returns:
        The Bento's tag, for ``bentoml serve``.

    Raises:
        PackagingError: The Bento is missing from the store, its content differs from what was
            packaged, or BentoML cannot import it.
    """
    from refinery.packaging import store

    name, _, version = bento.bento_tag.partition(":")
    if (Path(home) / "bentos" / name / version / "bento.yaml").is_file():
        return bento.bento_tag
    Path(home).mkdir(parents=True, exist_ok=True)
    # Downloaded into the home's own volume (a serving pod's /tmp is small), and removed once imported.
    with tempfile.TemporaryDirectory(prefix=".refinery-fetch-", dir=home) as tmp:
        archive = store.fetch(bento.bento_uri, Path(tmp) / "bento.bento", bento.bento_sha256)
        request = {"action": "import", "path": str(archive), "bento_tag": bento.bento_tag}
        _in_child_process(request, Path(home), f"importing Bento {bento.bento_tag} from {bento.bento_uri}")
    return bento.bento_tag


def _in_child_process(request: dict[str, Any], home: Path, what: str) -> dict[str, Any]:
    """Run the BentoML part of a request (build and export, or import) in a child process whose
    ``BENTOML_HOME`` is ``home``; its outcome, or a PackagingError naming ``what`` failed."""
    with tempfile.TemporaryDirectory(prefix="refinery-bentoml-") as tmp:
        request_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "UV_OFFLINE": "1"}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "refinery.packaging.bento", str(request_path), str(result_path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PackagingError(f"{what} took longer than {BUILD_TIMEOUT_S} s") from None
        outcome: dict[str, Any] = {}
        if result_path.is_file():
            outcome = json.loads(result_path.read_text(encoding="utf-8"))
        if proc.returncode != 0 or "error" in outcome or not outcome:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            cause = outcome.get("error") or f"the process exited with code {proc.returncode}"
            raise PackagingError(f"{what} failed: {cause}\n{tail}".rstrip())
    return outcome


def _build_in_this_process(request: dict[str, Any]) -> dict[str, str]:
    """The BentoML part of :func:`package`: import the model, build the Bento, export it to one file."""
    import bentoml

    model_tag = request["model_tag"]
    with bentoml.models.create(
        model_tag, labels=request["model_labels"], metadata=request["model_metadata"]
    ) as model:
        shutil.copytree(request["model_dir"], model.path, dirs_exist_ok=True)
    name, _, version = request["bento_tag"].partition(":")
    bento = bentoml.bentos.build_bentofile(
        str(Path(request["build_ctx"]) / BENTOFILE),
        build_ctx=request["build_ctx"],
        name=name,
        version=version,
        labels=request["bento_labels"],
        args={"model_tag": model_tag},
    )
    served = [str(m.tag) for m in bento.info.all_models]
    if model_tag not in served:
        raise PackagingError(f"Bento {bento.tag} records models {served}, not {model_tag}")
    # An uncompressed tar: model weights hardly compress (BentoML's default, xz, made 82 MB of the demo
    # model's 92 MB in 54 s on 2 cores; tar takes 0.2 s).
    bentoml.bentos.export_bento(str(bento.tag), request["export_path"], "tar")
    return {"bento_tag": str(bento.tag), "model_tag": model_tag}


def _import_in_this_process(request: dict[str, Any]) -> dict[str, str]:
    """The BentoML part of :func:`fetch`: import an exported Bento (with its model) into the home."""
    import bentoml

    bento = bentoml.bentos.import_bento(request["path"], "tar")
    if str(bento.tag) != request["bento_tag"]:
        raise PackagingError(f"the stored file holds Bento {bento.tag}, not {request['bento_tag']}")
    return {"bento_tag": str(bento.tag)}


def _main(argv: list[str]) -> int:
    request_path, result_path = Path(argv[0]), Path(argv[1])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        request = json.loads(request_path.read_text(encoding="utf-8"))
        run = _build_in_this_process if request["action"] == "build" else _import_in_this_process
        outcome: dict[str, str] = run(request)
        code = 0
    except Exception as exc:
        logger.exception("BentoML failed")
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    write_json(outcome, result_path)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

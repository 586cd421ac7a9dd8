"""The serving image: a Bento, its model and its pinned packages in a container image, built with podman.

The image is built from ``Containerfile`` in the service folder (``serving/Containerfile``) over a build
context made here: the Bento directory with its model copied in under ``models/`` (the layout of
``bentoml containerize``), and what only the build needs: the wheels of pinned distributions no package
index serves (a local version such as ``torch==2.13.0+cpu``, found in a wheelhouse) and this machine's
extra CA certificates (so pip works behind a TLS-inspecting proxy). Both stay in the builder stage; the
final image holds the virtual environment, the Bento and the model, and runs as uid 1034.

No registry is needed when the base image is local: the default is the Debian base that
``containers/build-base.sh`` builds from Debian packages. podman runs with ``CONTAINERS_CONF`` as set, or
else pointing at the repository's ``containers/containers.conf`` when there is one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from refinery.errors import PackagingError
from refinery.podman import podman_env
from refinery.results import to_jsonable, write_json

if TYPE_CHECKING:
    from refinery.config import RunConfig

CONTAINERFILE = "Containerfile"
DEFAULT_BASE_IMAGE = "localhost/refinery-base:bookworm"
# Where Debian (and the official Python images) keep CA certificates added to the system's set.
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
ENV_WHEELHOUSE = "REFINERY_WHEELHOUSE"
BUILD_TIMEOUT_S = 1800
LOG_TAIL_LINES = 25
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


@dataclass(frozen=True)
class ContainerImage:
    """A serving image built from a Bento."""

    image: str
    bento_tag: str
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return to_jsonable(self)

    def write_json(self, path: Path) -> Path:
        """Write this result as JSON, atomically."""
        return write_json(self, path)


def image_name(cfg: RunConfig, bento_tag: str) -> str:
    """``<gitops.image_repository>:<Bento version>``: the image promotion writes into the overlays."""
    return f"{cfg.gitops.image_repository}:{_split_tag(bento_tag)[1]}"


def _split_tag(bento_tag: str) -> tuple[str, str]:
    name, _, version = bento_tag.partition(":")
    if not name or not version or version == "latest" or "/" in bento_tag:
        raise PackagingError(f"bento tag {bento_tag!r} must be NAME:VERSION with a concrete version")
    return name, version


def wheelhouses() -> list[Path]:
    """Folders searched for wheels: ``$REFINERY_WHEELHOUSE``, then pip's ``find-links`` folders.

    pip's setting comes from its configuration files or ``PIP_FIND_LINKS`` (``pip config list``); only
    local folders count.
    """
    found: list[Path] = []
    for entry in os.environ.get(ENV_WHEELHOUSE, "").split(os.pathsep):
        if entry.strip():
            found.append(Path(entry.strip()))
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            for link in shlex.split(value.strip().strip("'\"")):
                path = Path(link.removeprefix("file://"))
                if path.is_dir() and path not in found:
                    found.append(path)
    return found


def local_wheels(requirements: list[str], folders: list[Path]) -> list[Path]:
    """The wheels for the pinned requirements that carry a local version (``torch==2.13.0+cpu``).

    Such versions are on no package index; every wheel of that name and version in ``folders`` is taken
    (pip picks the one that fits the image).

    Raises:
        PackagingError: No folder holds a wheel for one of them.
    """
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    wheels: list[Path] = []
    for line in requirements:
        match = _PIN.match(line.strip())
        if not match or "+" not in match.group(2):
            continue
        name, version = canonicalize_name(match.group(1)), match.group(2)
        try:
            wanted = Version(version)
        except InvalidVersion:
            raise PackagingError(f"requirement {line.strip()!r} has an invalid version") from None
        hits = []
        for folder in folders:
            for path in sorted(folder.glob("*.whl")):
                try:
                    whl_name, whl_version, _, _ = parse_wheel_filename(path.name)
                except InvalidWheelFilename:
                    continue
                if whl_name == name and whl_version == wanted:
                    hits.append(path)
        if not hits:
            searched = ", ".join(str(f) for f in folders) or "none"
            raise PackagingError(
                f"{line.strip()} is a local build that no package index serves, and no wheelhouse holds "
                f"its wheel (searched: {searched}); put the wheel in a folder named by {ENV_WHEELHOUSE} "
                "or pip's find-links"
            )
        wheels.extend(hits)
    return wheels


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (instant for a wheel of hundreds of MB) where the file system allows, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_readable(src: Path, dst: Path) -> None:
    """Copy a tree and make the copy readable by everyone.

    The service runs as an unprivileged user, while some libraries save model files private (0600).
    The store's own files are left as they are: only the copy is changed.
    """
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for path in [dst, *dst.rglob("*")]:
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod(0o755 if executable else 0o644)


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _bento_models(info: dict[str, Any]) -> list[tuple[str, str]]:
    tags = [m["tag"] for m in info.get("models") or []]
    tags += [m["tag"] for service in info.get("services") or [] for m in service.get("models") or []]
    pairs = []
    for tag in dict.fromkeys(tags):
        name, _, version = str(tag).partition(":")
        pairs.append((name, version))
    return pairs


def stored_bento(cfg: RunConfig, bento_tag: str) -> tuple[Path, dict[str, Any], list[Path]]:
    """Find a Bento and the models it serves in ``packaging.bentoml_home``.

    Returns:
        The Bento's folder, its ``bento.yaml`` and the folder of each model it serves.

    Raises:
        PackagingError: The tag is malformed, or the Bento or one of its models is not in the store.
    """
    if not cfg.packaging.bentoml_home:
        raise PackagingError("packaging.bentoml_home is empty; load the configuration with load_config")
    home = Path(cfg.packaging.bentoml_home)
    name, version = _split_tag(bento_tag)
    bento_dir = home / "bentos" / name / version
    if not (bento_dir / "bento.yaml").is_file():
        raise PackagingError(f"Bento {bento_tag} is not in {home} (packaging.bentoml_home); package it first")
    try:
        info = yaml.safe_load((bento_dir / "bento.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PackagingError(f"Bento {bento_tag} in {home} has an unreadable bento.yaml: {exc}") from None
    model_dirs = []
    for model_name, model_version in _bento_models(info):
        model_dir = home / "models" / model_name / model_version
        if not (model_dir / "model.yaml").is_file():
            raise PackagingError(
                f"Bento {bento_tag} serves model {model_name}:{model_version}, not in {home}"
            )
        model_dirs.append(model_dir)
    return bento_dir, info, model_dirs


def prepare_context(
    cfg: RunConfig, bento_tag: str, ctx: Path, wheel_folders: list[Path] | None = None
) -> dict[str, Any]:
    """Lay out the build context for ``Containerfile`` in ``ctx`` (see the module docstring).

    Returns:
        The Bento's ``bento.yaml``.

    Raises:
        PackagingError: The Bento or one of its models is not in the BentoML home, or a wheel is missing.
    """
    bento_dir, info, model_dirs = stored_bento(cfg, bento_tag)
    _copy_readable(bento_dir, ctx / "bento")
    for model_dir in model_dirs:
        _copy_readable(model_dir, ctx / "bento" / "models" / model_dir.parent.name / model_dir.name)

    requirements = (
        (bento_dir / "env" / "python" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    )
    wheel_dir = ctx / "build" / "wheels"
    wheel_dir.mkdir(parents=True)
    for wheel in local_wheels(requirements, wheelhouses() if wheel_folders is None else wheel_folders):
        _link_or_copy(wheel, wheel_dir / wheel.name)
    ca_dir = ctx / "build" / "ca-certificates"
    ca_dir.mkdir(parents=True)
    for cert in sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []:
        shutil.copy2(cert, ca_dir / cert.name)
    return info


def containerize(
    cfg: RunConfig,
    bento_tag: str,
    image: str | None = None,
    *,
    base_image: str | None = None,
    wheel_folders: list[Path] | None = None,
) -> ContainerImage:
    """Build the serving image of a packaged Bento with podman.

    Args:
        cfg: Resolved run configuration (``packaging.bentoml_home``, ``packaging.service_dir``,
            ``gitops.image_repository``).
        bento_tag: The Bento, as :func:`refinery.packaging.bento.package` returned it.
        image: Name of the image; default ``<gitops.image_repository>:<Bento version>``.
        base_image: Image with Python 3.11 to build on (the build argument ``BASE_IMAGE``); default
            :data:`DEFAULT_BASE_IMAGE`.
        wheel_folders: Where to look for wheels no index serves; default :func:`wheelhouses`.

    Returns:
        The image name, the Bento, the image size and the build time.

    Raises:
        PackagingError: podman is missing, the Bento, a model, the Containerfile, a wheel or a local base
            image is missing, or the build failed (the message ends with the last lines of its log).
    """
    if shutil.which("podman") is None:
        raise PackagingError(
            "podman is not installed; the serving image is built with podman (apt-get install podman)"
        )
    containerfile = Path(cfg.packaging.service_dir) / CONTAINERFILE
    if not containerfile.is_file():
        raise PackagingError(f"{containerfile} is missing; the service folder needs the image's build file")
    image = image or image_name(cfg, bento_tag)
    base_image = base_image or DEFAULT_BASE_IMAGE
    if base_image.startswith("localhost/") and _podman("image", "exists", base_image).returncode != 0:
        raise PackagingError(
            f"base image {base_image} is not in podman's local storage; build it with "
            f"containers/build-base.sh {base_image}"
        )

    with tempfile.TemporaryDirectory(prefix="refinery-image-") as tmp:
        ctx = Path(tmp) / "context"
        labels = prepare_context(cfg, bento_tag, ctx, wheel_folders).get("labels") or {}
        name, version = _split_tag(bento_tag)
        argv = [
            "podman",
            "build",
            "--file",
            str(containerfile),
            "--tag",
            image,
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "--label",
            f"org.opencontainers.image.title={name}",
            "--label",
            f"org.opencontainers.image.version={version}",
            "--label",
            f"refinery.bento_tag={bento_tag}",
            "--label",
            f"refinery.model_name={labels.get('model_name', '')}",
            "--label",
            f"refinery.model_version={labels.get('model_version', '')}",
            str(ctx),
        ]
        log_path = Path(tmp) / "build.log"
        start = time.monotonic()
        try:
            with log_path.open("w", encoding="utf-8") as log:
                proc = subprocess.run(
                    argv,
                    env=podman_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
            failure = None if proc.returncode == 0 else f"podman build exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"podman build took longer than {BUILD_TIMEOUT_S} s"
        seconds = time.monotonic() - start
        if failure:
            tail = "\n".join(
                log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
            )
            raise PackagingError(f"building image {image} from Bento {bento_tag} failed: {failure}\n{tail}")

    inspected = _podman("image", "inspect", "--format", "{{.Size}}", image)
    if inspected.returncode != 0:
        raise PackagingError(f"podman built {image} but cannot inspect it: {inspected.stderr.strip()}")
    return ContainerImage(
        image=image, bento_tag=bento_tag, size_bytes=int(inspected.stdout.strip()), seconds=round(seconds, 1)
    )

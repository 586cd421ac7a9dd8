"""The overlay edit: what a release is, and how it is read from and written into a kustomization.

A promotion rewrites exactly one file, ``k8s/overlays/<environment>/kustomization.yaml``: the
``images`` entry named ``refinery-serving`` (the serving image, pinned by digest when it comes from a
registry) and the release literals of the ``refinery-release`` ConfigMap generator (model name and
version, and the Bento's tag, store URI and SHA-256, which the serving container fetches at start).
Everything else in the file is kept, its leading comment block verbatim. The functions here work on
text only; :mod:`refinery.gitops.change` applies them to a clone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from refinery.errors import GitOpsError
from refinery.results import Record
from refinery.serving import ENV_BENTO_SHA256, ENV_BENTO_TAG, ENV_BENTO_URI, ENV_MODEL_NAME, ENV_MODEL_VERSION

#: Image name used in k8s/base; each overlay's ``images`` entry with this name is what promote edits.
IMAGE_NAME = "refinery-serving"
#: Name of the ConfigMap generator (in each overlay) that carries the release literals.
RELEASE_CONFIGMAP = "refinery-release"
#: Value of REFINERY_MODEL_VERSION in an overlay that has never been promoted.
UNRELEASED = "none"
#: Where the overlays live inside the GitOps repository.
OVERLAYS_DIR = "k8s/overlays"

# The release literals, by Release field: the serving container reads them as environment variables.
_LITERALS = {
    "model_name": ENV_MODEL_NAME,
    "model_version": ENV_MODEL_VERSION,
    "bento_tag": ENV_BENTO_TAG,
    "bento_uri": ENV_BENTO_URI,
    "bento_sha256": ENV_BENTO_SHA256,
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# An OCI image tag: https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Release(Record):
    """What an overlay serves: a registered model version, the Bento built from it and the image that
    serves it.

    Attributes:
        model_name: Registered model name, e.g. ``review-sentiment``.
        model_version: Registry version, e.g. ``3``.
        bento_tag: ``NAME:VERSION`` of the Bento.
        bento_uri: Where the Bento is stored; the serving container fetches it from there.
        bento_sha256: The stored Bento's SHA-256, checked by the serving container.
        image: The serving image: ``registry/repository@sha256:...`` (or ``localhost/name:tag`` for
            podman's local storage, which has no digests a cluster could pull by).
    """

    model_name: str
    model_version: str
    bento_tag: str
    bento_uri: str
    bento_sha256: str
    image: str


def overlay_path(environment: str) -> str:
    """The kustomization of ``environment``, relative to the repository root."""
    return f"{OVERLAYS_DIR}/{environment}/kustomization.yaml"


class _KustomizationDumper(yaml.SafeDumper):
    """Safe dumper that keeps multi-line strings (inline ``patch: |`` blocks) as block literals."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_KustomizationDumper.add_representer(str, _represent_str)


def _split_header(text: str) -> tuple[str, str]:
    """The subject and body of the commit that sets ``overlay`` to ``release``, with trailers naming it."""
    """Split the leading comment block (kept verbatim) from the YAML body (rewritten)."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (lines[i].lstrip().startswith("#") or not lines[i].strip()):
        i += 1
    return "".join(lines[:i]), "".join(lines[i:])


def load_kustomization(text: str, where: str) -> dict[str, Any]:
    """The kustomization mapping in ``text``; ``where`` names the file in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GitOpsError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise GitOpsError(f"{where}: expected a kustomization mapping")
    return data


def _release_literals(data: dict[str, Any], where: str) -> list[Any]:
    for entry in data.get("configMapGenerator") or []:
        if isinstance(entry, dict) and entry.get("name") == RELEASE_CONFIGMAP:
            literals = entry.setdefault("literals", [])
            if not isinstance(literals, list):
                raise GitOpsError(
                    f"{where}: configMapGenerator {RELEASE_CONFIGMAP!r} literals must be a list"
                )
            return literals
    raise GitOpsError(
        f"{where}: no configMapGenerator named {RELEASE_CONFIGMAP!r}, whose literals promote rewrites"
    )


def _image_entry(data: dict[str, Any]) -> dict[str, Any] | None:
    for entry in data.get("images") or []:
        if isinstance(entry, dict) and entry.get("name") == IMAGE_NAME:
            return entry
    return None


def _image_of(entry: dict[str, Any] | None) -> str:
    """The image an ``images`` entry names, as ``name@digest`` or ``name:tag`` ("" for none)."""
    if entry is None or not entry.get("newName"):
        return ""
    if entry.get("digest"):
        return f"{entry['newName']}@{entry['digest']}"
    return f"{entry['newName']}:{entry.get('newTag', '')}"


def release_from_text(text: str, where: str) -> Release | None:
    """The release a kustomization names; None when it was never promoted (model version ``none``).

    Raises:
        GitOpsError: The text is not a kustomization, or lacks the release generator or literals.
    """
    data = load_kustomization(text, where)
    literals = _release_literals(data, where)
    values = dict(str(item).partition("=")[::2] for item in literals)
    if values.get(ENV_MODEL_VERSION) == UNRELEASED:
        return None
    missing = [key for key in _LITERALS.values() if key not in values]
    if missing:
        raise GitOpsError(
            f"{where}: configMapGenerator {RELEASE_CONFIGMAP!r} lacks the literal(s) {', '.join(missing)}"
        )
    fields = {field: values[key] for field, key in _LITERALS.items()}
    return Release(**fields, image=_image_of(_image_entry(data)))


def apply_release(text: str, release: Release, where: str) -> str:
    """``text`` with the serving image and the release literals set to ``release``; the rest kept."""
    header, body = _split_header(text)
    data = load_kustomization(body, where)
    image = _image_entry(data)
    if image is None:
        image = {"name": IMAGE_NAME}
        data["images"] = [*(data.get("images") or []), image]
    name, at, digest = release.image.partition("@")
    if at:
        # By digest: the cluster runs exactly the image the registry held when this was committed.
        image["newName"], image["digest"] = name, digest
        image.pop("newTag", None)
    else:
        image["newName"], _, image["newTag"] = name.rpartition(":")
        image.pop("digest", None)
    literals = _release_literals(data, where)
    wanted = {key: getattr(release, field) for field, key in _LITERALS.items()}
    for i, item in enumerate(literals):
        key = str(item).partition("=")[0]
        if key in wanted:
            literals[i] = f"{key}={wanted.pop(key)}"
    literals.extend(f"{key}={value}" for key, value in wanted.items())
    return header + yaml.dump(
        data,
        Dumper=_KustomizationDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


def check_release(release: Release) -> None:
    """Refuse a release whose fields could not be written into an overlay and served as they are.

    Raises:
        GitOpsError: Every malformed field, in one message.
    """
    problems = []
    if not _NAME_RE.match(release.model_name):
        problems.append(f"model_name {release.model_name!r} must match {_NAME_RE.pattern}")
    if not _NAME_RE.match(release.model_version) or release.model_version == UNRELEASED:
        problems.append(
            f"model_version {release.model_version!r} must match {_NAME_RE.pattern} "
            f"and not be {UNRELEASED!r} (which marks an overlay that was never promoted)"
        )
    name, sep, version = release.bento_tag.partition(":")
    if not sep or not _NAME_RE.match(name) or not _IMAGE_TAG_RE.match(version) or version == "latest":
        problems.append(f"bento_tag {release.bento_tag!r} must be NAME:VERSION with a concrete VERSION")
    if not release.bento_uri or any(c.isspace() for c in release.bento_uri):
        problems.append(f"bento_uri {release.bento_uri!r} must be a URI without spaces")
    if not _SHA256_RE.match(release.bento_sha256):
        problems.append(f"bento_sha256 {release.bento_sha256!r} must be 64 hexadecimal digits")
    image, at, digest = release.image.partition("@")
    tag = image.rpartition(":")[2] if "/" in image and ":" in image.rpartition("/")[2] else ""
    if at and not _DIGEST_RE.match(digest):
        problems.append(f"image {release.image!r} has a malformed digest")
    elif not at and (not tag or tag == "latest"):
        problems.append(
            f"image {release.image!r} must be pinned by digest, or (local storage) by a concrete tag"
        )
    if problems:
        raise GitOpsError("cannot promote release: " + "; ".join(problems))


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) made single spaces."""
    return " ".join(text.split())


def commit_message(
    environment: str, release: Release, previous: Release | None, overlay: str, action: str, reason: str
) -> tuple[str, str]:
    before = (
        f"{previous.model_name} v{previous.model_version} (bento {previous.bento_tag})"
        if previous
        else "nothing released"
    )
    where = "to" if action == "promote" else "in"
    subject = (
        f"{action} {release.model_name} v{release.model_version} {where} {environment} "
        f"(bento {release.bento_tag})"
    )
    body = (
        f"Sets {overlay} to image {release.image} and the {RELEASE_CONFIGMAP} ConfigMap to "
        f"{release.model_name} v{release.model_version}; replaces {before}.\n"
        f"\n"
        f"Refinery-Environment: {environment}\n"
        f"Refinery-Model-Name: {release.model_name}\n"
        f"Refinery-Model-Version: {release.model_version}\n"
        f"Refinery-Bento-Tag: {release.bento_tag}\n"
        f"Refinery-Bento-Uri: {release.bento_uri}\n"
        f"Refinery-Image: {release.image}\n"
        f"Refinery-Previous-Release: {before}\n"
        f"Refinery-Action: {action}"
    )
    if reason:
        body += f"\nRefinery-Reason: {one_line(reason)}"
    return subject, body

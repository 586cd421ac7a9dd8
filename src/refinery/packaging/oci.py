"""Image references and their digests in an OCI registry (the distribution API, no container engine).

Promotion pins the serving image by digest: before the GitOps commit names an image, :func:`resolve`
asks the registry for the digest its tag points to, so the commit can only name an image the registry
holds, and the cluster runs exactly that image even if the tag is moved later.

The registry is reached over HTTPS, except on a loopback address (127.0.0.0/8, ::1, localhost with a
port), which Docker and podman also reach over plain HTTP. Anonymous access is tried first; on a 401 the
credentials from ``REFINERY_REGISTRY_USERNAME`` / ``REFINERY_REGISTRY_PASSWORD`` are used, as Basic
authentication or to fetch a bearer token from the realm the registry names (the token flow of Docker
Hub, GHCR, ECR, Harbor and the CNCF distribution registry).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from refinery.credentials import REGISTRY_PASSWORD, REGISTRY_USERNAME
from refinery.errors import ImageRegistryError
from refinery.version import LOCAL_REGISTRY

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
TIMEOUT_S = 15
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class ImageReference:
    """``registry/repository:tag`` or ``registry/repository@digest``.

    Attributes:
        registry: Host (and port) of the registry, e.g. ``registry.acme.example`` or ``127.0.0.1:5000``;
            ``localhost`` for podman's local storage.
        repository: Path of the image in the registry, e.g. ``ml/refinery``.
        tag: The tag, when named by tag.
        digest: ``sha256:<hex>``, when named (or resolved) by digest.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        """Parse a fully qualified reference (the registry is the part before the first ``/``).

        Raises:
            ImageRegistryError: No registry host, repository, tag or digest, or a malformed one.
        """
        name, at, digest = reference.partition("@")
        registry, slash, rest = name.partition("/")
        tag = None
        if ":" in rest.rpartition("/")[2]:
            rest, _, tag = rest.rpartition(":")
        problems = []
        if not slash or not rest or not ("." in registry or ":" in registry or registry == LOCAL_REGISTRY):
            problems.append("it must start with a registry host (registry.example/name:tag)")
        if at and not _DIGEST.match(digest):
            problems.append(f"{digest!r} is not a sha256 digest")
        if tag is not None and not _TAG.match(tag):
            problems.append(f"{tag!r} is not a valid tag")
        if not at and tag is None:
            problems.append("it names neither a tag nor a digest")
        if problems:
            raise ImageRegistryError(f"image reference {reference!r}: {'; '.join(problems)}")
        return cls(registry, rest, tag, digest or None)

    @property
    def local(self) -> bool:
        """Whether it names podman's local storage, which no registry serves."""
        return self.registry == LOCAL_REGISTRY

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def pinned(self) -> str:
        """``registry/repository@digest``: the image, whatever its tag points to later.

        Raises:
            ImageRegistryError: The digest is not known (see :func:`resolve`).
        """
        if not self.digest:
            raise ImageRegistryError(f"{self} has no digest to pin it by; resolve it in its registry first")
        return f"{self.name}@{self.digest}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def _scheme(registry: str) -> str:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    if host == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(host).is_loopback else "https"
    except ValueError:
        return "https"


def _basic(environ: Mapping[str, str]) -> str | None:
    user, password = environ.get(REGISTRY_USERNAME), environ.get(REGISTRY_PASSWORD)
    if not user or password is None:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _request(url: str, method: str, headers: Mapping[str, str]) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _token(challenge: str, basic: str | None, registry: str) -> str:
    """A bearer token from the realm a ``WWW-Authenticate: Bearer ...`` challenge names."""
    params = dict(_CHALLENGE.findall(challenge))
    realm = params.pop("realm", "")
    if not realm:
        raise ImageRegistryError(f"container registry {registry} asked for a bearer token without a realm")
    url = realm + "?" + urllib.parse.urlencode(params)
    status, _, body = _request(url, "GET", {"Authorization": basic} if basic else {})
    if status in (401, 403):
        raise ImageRegistryError(
            f"container registry {registry} refused the credentials ({REGISTRY_USERNAME}) at {realm}"
            f" (HTTP {status})"
        )
    if status != 200:
        raise ImageRegistryError(f"container registry {registry}: token request to {realm} answered {status}")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ImageRegistryError(f"container registry {registry}: {realm} answered with no JSON object")
    token = payload.get("token") or payload.get("access_token")
    if not token:
        raise ImageRegistryError(f"container registry {registry}: {realm} answered without a token")
    return f"Bearer {token}"


def _authorization(challenge: str, environ: Mapping[str, str], ref: ImageReference) -> str:
    """The ``Authorization`` header answering a registry's 401 challenge: a bearer token from the realm
    it names, or basic credentials."""
    basic = _basic(environ)
    if challenge.lower().startswith("bearer"):
        return _token(challenge, basic, ref.registry)
    if basic:
        return basic
    raise ImageRegistryError(
        f"container registry {ref.registry} needs credentials for {ref.repository}: set"
        f" {REGISTRY_USERNAME} and {REGISTRY_PASSWORD} (resources.<env>.credentials.container_registry)"
    )


def _manifest_digest(url: str, ref: ImageReference, environ: Mapping[str, str]) -> tuple[int, str]:
    """The manifest's HTTP status and, when 200, its digest (authenticating when the registry asks)."""
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    status, answer, body = _request(url, "HEAD", headers)
    if status == 401:
        headers["Authorization"] = _authorization(answer.get("WWW-Authenticate", ""), environ, ref)
        status, answer, body = _request(url, "HEAD", headers)
    digest = answer.get("Docker-Content-Digest", "") if status == 200 else ""
    if status == 200 and not _DIGEST.match(digest):
        # Not every registry sends the header on HEAD; the digest is the manifest's own hash.
        status, answer, body = _request(url, "GET", headers)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return status, digest


def resolve(reference: str, environ: Mapping[str, str] | None = None) -> ImageReference:
    """The digest a tagged image has in its registry (a reference with a digest is returned as is).

    Args:
        reference: ``registry/repository:tag``.
        environ: Where the registry credentials are read from (default: this process's environment).

    Returns:
        The reference with ``digest`` set.

    Raises:
        ImageRegistryError: The reference names podman's local storage, the registry cannot be reached
            or refuses the credentials, or does not hold the image; the message names the registry.
    """
    ref = ImageReference.parse(reference)
    if ref.digest:
        return ref
    if ref.local:
        raise ImageRegistryError(
            f"{reference} is in podman's local storage ({LOCAL_REGISTRY}/), which no registry serves:"
            " push the image and name its registry (images.registry, refinery compile --registry)"
        )
    environ = os.environ if environ is None else environ
    url = f"{_scheme(ref.registry)}://{ref.registry}/v2/{ref.repository}/manifests/{ref.tag}"
    try:
        status, digest = _manifest_digest(url, ref, environ)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageRegistryError(
            f"container registry {ref.registry} is unreachable: {reason}", unreachable=True
        ) from None
    if status in (401, 403):
        raise ImageRegistryError(
            f"container registry {ref.registry} refused the credentials for {ref.repository} (HTTP {status})"
        )
    if status == 404:
        raise ImageRegistryError(
            f"image {ref} is not in container registry {ref.registry}: build and push it first"
            " (make push REGISTRY=...)"
        )
    if status != 200:
        raise ImageRegistryError(f"container registry {ref.registry} answered HTTP {status} for {ref}")
    return ImageReference(ref.registry, ref.repository, ref.tag, digest)

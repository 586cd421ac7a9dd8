"""Resolving an image's digest through the bearer-token flow of hosted registries (Docker Hub, GHCR, ECR,
Harbor), which cannot run here: a small loopback server stands in for such a registry and its token
service, speaking the distribution API's challenge, token and manifest requests. The Basic-auth flow runs
against a real docker-registry in tests/cluster."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from refinery.errors import ImageRegistryError
from refinery.packaging.oci import resolve

MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
USER, PASSWORD, TOKEN = "bot", "s3cret", "tok-123"


class TokenRegistry(ThreadingHTTPServer):
    """Answers manifest requests for ``ml/refinery:1.0`` only with a bearer token from its ``/token``."""

    send_digest_header = True
    token_body = json.dumps({"token": TOKEN}).encode()
    requests: list[tuple[str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: TokenRegistry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._manifest(body=False)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        if self.path.startswith("/token"):
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != basic:
                self._answer(401, b"")
                return
            self._answer(200, self.server.token_body)
            return
        self._manifest(body=True)

    def _manifest(self, body: bool) -> None:
        port = self.server.server_address[1]
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = f'Bearer realm="http://127.0.0.1:{port}/token",service="reg",scope="repository:ml/refinery:pull"'
            self._answer(401, b"", {"WWW-Authenticate": challenge})
            return
        if self.path != "/v2/ml/refinery/manifests/1.0":
            self._answer(404, b"")
            return
        headers = {"Docker-Content-Digest": DIGEST} if self.server.send_digest_header else {}
        self._answer(200, MANIFEST if body else b"", headers)

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def registry() -> Iterator[TokenRegistry]:
    server = TokenRegistry(("127.0.0.1", 0), _Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _image(server: TokenRegistry, tag: str = "1.0") -> str:
    return f"127.0.0.1:{server.server_address[1]}/ml/refinery:{tag}"


CREDENTIALS = {"REFINERY_REGISTRY_USERNAME": USER, "REFINERY_REGISTRY_PASSWORD": PASSWORD}


def test_a_tag_resolves_to_its_digest_with_a_bearer_token(registry: TokenRegistry) -> None:
    resolved = resolve(_image(registry), CREDENTIALS)
    assert resolved.digest == DIGEST
    assert resolved.pinned == f"127.0.0.1:{registry.server_address[1]}/ml/refinery@{DIGEST}"
    # The scope and service of the challenge went to the token service.
    token_request = next(path for method, path in registry.requests if path.startswith("/token"))
    assert "scope=repository%3Aml%2Frefinery%3Apull" in token_request and "service=reg" in token_request


def test_without_the_digest_header_the_digest_is_the_manifests_hash(registry: TokenRegistry) -> None:
    registry.send_digest_header = False
    assert resolve(_image(registry), CREDENTIALS).digest == DIGEST


@pytest.mark.parametrize(
    ("environ", "tag", "token_body", "message"),
    [
        ({}, "1.0", None, r"refused the credentials \(REFINERY_REGISTRY_USERNAME\) at .*/token"),
        (
            {**CREDENTIALS, "REFINERY_REGISTRY_PASSWORD": "wrong"},
            "1.0",
            None,
            r"refused the credentials",
        ),
        (CREDENTIALS, "2.0", None, r"image .*:2\.0 is not in container registry .*make push"),
        (CREDENTIALS, "1.0", b"<html>sign in</html>", r"/token answered with no JSON object"),
        (CREDENTIALS, "1.0", b"{}", r"/token answered without a token"),
    ],
)
def test_each_failure_names_the_registry_and_what_went_wrong(
    registry: TokenRegistry, environ: dict[str, str], tag: str, token_body: bytes | None, message: str
) -> None:
    if token_body is not None:
        registry.token_body = token_body
    with pytest.raises(ImageRegistryError, match=message):
        resolve(_image(registry, tag), environ)

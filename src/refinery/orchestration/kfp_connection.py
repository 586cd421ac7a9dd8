"""The connection to the Kubeflow Pipelines API (v2beta1): where it is, how requests authenticate, and
errors that name the host.

:func:`endpoint` reads the settings (first wins):

- host: ``REFINERY_KFP_HOST``, kfp's ``KF_PIPELINES_ENDPOINT``, ``kfp.host``;
- run links: ``KF_PIPELINES_UI_ENDPOINT``, ``kfp.ui_url``, the host;
- credentials: a bearer token in ``REFINERY_KFP_TOKEN``; else the Kubeflow Pipelines service-account token
  file of a pod (``KF_PIPELINES_SA_TOKEN_PATH``, default /var/run/secrets/kubeflow/pipelines/token) when it
  exists, re-read before each call as the kubelet rotates it; else none. (kfp.Client reads that file
  itself only when it is given no host; refinery always gives one, so it hands the file over.)
- namespace (multi-user Kubeflow): ``kfp.namespace``, passed to every call that takes one.

:func:`connect` probes the API once and returns a ``kfp.Client``; :func:`calling` turns the client's
errors into :class:`~refinery.errors.KfpApiError`; :func:`pages` walks a paged list call. The pipelines,
experiments and runs built on them are in :mod:`refinery.orchestration.kfp_api`.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.config import KfpConfig, RunConfig
from refinery.errors import KfpApiError

HOST_ENV = "REFINERY_KFP_HOST"
KFP_HOST_ENV = "KF_PIPELINES_ENDPOINT"
UI_ENV = "KF_PIPELINES_UI_ENDPOINT"
TOKEN_ENV = "REFINERY_KFP_TOKEN"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"

#: Seconds a single API call may take before it counts as unanswered.
CALL_TIMEOUT = 30.0
PAGE_SIZE = 100


@dataclass(frozen=True)
class Endpoint:
    """The Kubeflow Pipelines API a command talks to, with where each setting came from."""

    host: str
    host_from: str
    namespace: str | None
    experiment: str
    ui_url: str
    verify_ssl: bool = True
    ca_cert: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    service_account: str | None = None

    def run_url(self, run_id: str) -> str:
        """The run's page in the Kubeflow Pipelines UI."""
        return f"{self.ui_url.rstrip('/')}/#/runs/details/{run_id}"

    @property
    def credentials(self) -> str:
        """How requests authenticate, in words (never the token)."""
        if self.token:
            return f"a bearer token from {TOKEN_ENV}"
        if self.token_file:
            return f"the service-account token in {self.token_file}"
        return "no credentials"


def _settings(cfg: RunConfig | KfpConfig | None) -> KfpConfig:
    if isinstance(cfg, RunConfig):
        return cfg.kfp
    return cfg or KfpConfig()


def endpoint(cfg: RunConfig | KfpConfig | None = None) -> Endpoint:
    """The API ``cfg`` names, with the environment's settings on top (see the module's docstring).

    Raises:
        KfpApiError: No host is configured anywhere; the message says how to set one.
    """
    kfp = _settings(cfg)
    host, host_from = kfp.host, "kfp.host"
    for name in (HOST_ENV, KFP_HOST_ENV):
        if os.environ.get(name, "").strip():
            host, host_from = os.environ[name].strip(), name
            break
    if not host:
        raise KfpApiError(
            "no Kubeflow Pipelines API is configured: set kfp.host in the configuration (e.g. kfp: {host:"
            f" http://ml-pipeline.kubeflow.svc.cluster.local:8888}}, or --set kfp.host=URL), or {HOST_ENV}"
            f" (or {KFP_HOST_ENV}) in the environment"
        )
    if not host.startswith(("http://", "https://")):
        raise KfpApiError(f"{host_from} {host!r} is not an http:// or https:// URL")
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    token_file = None
    if token is None:
        path = os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_PATH
        token_file = path if os.path.isfile(path) else None
    ui = os.environ.get(UI_ENV, "").strip() or kfp.ui_url or host
    return Endpoint(
        host=host.rstrip("/"),
        host_from=host_from,
        namespace=kfp.namespace,
        experiment=kfp.experiment,
        ui_url=ui.rstrip("/"),
        verify_ssl=kfp.verify_ssl,
        ca_cert=kfp.ca_cert,
        token=token,
        token_file=token_file,
        service_account=kfp.service_account,
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect from the API's address is a login page (dex, oauth2-proxy), never the API.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _probe(ep: Endpoint) -> None:
    """One healthz call, so that an unreachable host or refused credentials fail at once and say so
    (kfp.Client retries its own healthz call for half a minute, then reports a timeout)."""
    where = f"the Kubeflow Pipelines API at {ep.host} ({ep.host_from})"
    request = urllib.request.Request(f"{ep.host}/apis/v2beta1/healthz", headers=_probe_headers(ep))
    try:
        with _probe_opener(ep).open(request, timeout=CALL_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise _refused(ep, where, exc) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KfpApiError(f"{where} is unreachable: {reason}", unreachable=True) from None
    try:
        json.loads(body or b"{}")
    except ValueError:
        raise KfpApiError(f"{where} did not answer as the Kubeflow Pipelines API (not JSON)") from None


def _probe_headers(ep: Endpoint) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if ep.token:
        headers["Authorization"] = f"Bearer {ep.token}"
    elif ep.token_file:
        with contextlib.suppress(OSError):
            headers["Authorization"] = f"Bearer {Path(ep.token_file).read_text().strip()}"
    return headers


def _probe_opener(ep: Endpoint) -> urllib.request.OpenerDirector:
    context = None
    if ep.host.startswith("https://"):
        context = ssl.create_default_context(cafile=ep.ca_cert)
        if not ep.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    # kfp's client ignores HTTP(S)_PROXY; so does the probe.
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )


def _refused(ep: Endpoint, where: str, exc: urllib.error.HTTPError) -> KfpApiError:
    """The error for a healthz call answered with an HTTP error, saying what that answer usually means."""
    if exc.code in (401, 403):
        return KfpApiError(
            f"{where} refused the credentials (HTTP {exc.code}) with {ep.credentials}: set {TOKEN_ENV}"
            " to a token the deployment accepts"
        )
    if exc.code in (301, 302, 303, 307, 308):
        return KfpApiError(
            f"{where} redirects to {exc.headers.get('Location', 'another page')} (a login page?): the"
            f" API needs a bearer token ({TOKEN_ENV}) or its in-cluster address"
        )
    if exc.code == 404:
        return KfpApiError(
            f"{where} has no /apis/v2beta1/healthz (HTTP 404): is it the address of the ml-pipeline"
            " service (port 8888), or a proxy in front of it?"
        )
    return KfpApiError(f"{where} answered HTTP {exc.code} {exc.reason}")


def connect(cfg: RunConfig | KfpConfig | Endpoint | None = None) -> Any:
    """A ``kfp.Client`` for the API ``cfg`` names, its credentials and namespace set.

    Raises:
        KfpApiError: No host is configured; the host is unreachable, refuses the credentials or is not
            a Kubeflow Pipelines API. The message names the host.
    """
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    ep = cfg if isinstance(cfg, Endpoint) else endpoint(cfg)
    _probe(ep)
    credentials = ServiceAccountTokenVolumeCredentials(ep.token_file) if ep.token_file else None
    with warnings.catch_warnings(), _calling(ep.host, "connecting"):
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": so does refinery.
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(
            host=ep.host,
            # "kubeflow" is kfp's default, which means none; every call below passes the namespace.
            namespace=ep.namespace or "kubeflow",
            existing_token=ep.token,
            credentials=credentials,
            ui_host=ep.ui_url,
            verify_ssl=ep.verify_ssl,
            ssl_ca_cert=ep.ca_cert,
        )


def _host(client: Any) -> str:
    config = getattr(client, "_existing_config", None)
    return str(getattr(config, "host", "") or "the Kubeflow Pipelines API")


def _error_text(exc: Any) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or ""
    detail = ""
    body = getattr(exc, "body", None)
    if body:
        try:
            parsed = json.loads(body)
            detail = (
                str(parsed.get("message") or parsed.get("error") or "") if isinstance(parsed, dict) else ""
            )
        except (TypeError, ValueError):
            detail = str(body)[:300]
    head = f"HTTP {status} {reason}".strip() if status else str(reason or exc)
    return f"{head}: {detail}" if detail else head


@contextlib.contextmanager
def _calling(host: str, what: str) -> Iterator[None]:
    """Turn the client's errors into a KfpApiError naming the host and the call."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        if exc.status == 0:  # the client's own wrapping of a TLS failure
            raise KfpApiError(f"{host} is unreachable ({what}): {exc.reason}", unreachable=True) from None
        raise KfpApiError(f"{what} at {host} failed: {_error_text(exc)}", status=exc.status) from None
    except urllib3.exceptions.HTTPError as exc:
        raise KfpApiError(f"{host} is unreachable ({what}): {exc}", unreachable=True) from None


def calling(client: Any, what: str) -> contextlib.AbstractContextManager[None]:
    """A context in which the client's errors become a KfpApiError naming the host and ``what``."""
    return _calling(_host(client), what)


def conflict(exc: KfpApiError) -> bool:
    """Whether the server refused to create something because it exists (created since we looked)."""
    return exc.status == 409


def pages(fetch: Callable[[str], Any], attribute: str) -> Iterator[Any]:
    """Every item of a paged list call: ``fetch(page_token)`` until no ``next_page_token`` is left."""
    token = ""
    while True:
        response = fetch(token)
        yield from getattr(response, attribute, None) or []
        token = getattr(response, "next_page_token", None) or ""
        if not token:
            return


def name_filter(name: str) -> str:
    """A v2beta1 filter: ``display_name`` equals ``name``."""
    return json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})


def namespace_arg(namespace: str | None) -> dict[str, str]:
    """The ``namespace`` keyword of a list or create call: none when no namespace is set."""
    return {"namespace": namespace} if namespace else {}

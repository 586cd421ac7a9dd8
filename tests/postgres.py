"""A throwaway PostgreSQL server for the tests, run from the binaries of Debian's package.

The session starts one server on first use: ``initdb`` into a fresh temporary folder, trust
authentication, listening on 127.0.0.1 on a free port with its unix socket in that folder, durability
switched off (fsync and friends) because the data is thrown away. PostgreSQL refuses to run as root, so
under root the server runs as the ``postgres`` system user the package creates. At the end of the session
the server is stopped and the folder removed.

Fixtures (registered for the whole suite by ``pytest_plugins`` in tests/conftest.py):

- ``postgres_server``: the session's :class:`PostgresServer`.
- ``postgres_url``: a new empty database for one test, as a SQLAlchemy URL
  (``postgresql+psycopg://postgres@127.0.0.1:PORT/NAME``); dropped after the test.
- ``sql_url``: parametrised over ``sqlite`` and ``postgres``: a fresh, empty database of either kind.

Without the server binaries the fixtures fail (they do not skip) and say to run ``make postgres``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.processes import free_port

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"  # the database role initdb creates; trust auth, no password
SYSTEM_USER = "postgres"  # the unprivileged account the server runs as when the tests run as root
HOST = "127.0.0.1"
_START_ATTEMPTS = 3
_COMMAND_TIMEOUT_S = 120
# Settings for a disposable server: nothing needs to survive a crash, so nothing is flushed to disk.
_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # MLflow keeps a connection pool per store and per URI; a test suite opens many of them.
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing, or the server could not be set up or started."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, else the ones on PATH."""

    def version(path: Path) -> tuple[int, str]:
        name = path.parent.name
        return (int(name) if name.isdigit() else -1, name)

    for folder in sorted((Path(p) for p in glob.glob(BIN_GLOB)), key=version, reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(pg_ctl).parent
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None to run as ourselves, the ``postgres`` user under root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        # Debian's package creates this user; make it when the binaries came from elsewhere.
        useradd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        subprocess.run(
            [*useradd, "--shell", "/usr/sbin/nologin", SYSTEM_USER], check=True, capture_output=True
        )
        return pwd.getpwnam(SYSTEM_USER)


@dataclass
class PostgresServer:
    """One running throwaway server.

    Attributes:
        bin_dir: Where initdb, pg_ctl and postgres come from.
        root: The temporary folder: ``data/`` (the cluster), the unix socket, ``server.log``.
        port: The TCP port on 127.0.0.1.
        account: The OS account the server runs as (None: this process's own).
        start_seconds: How long initdb plus start took.
    """

    bin_dir: Path
    root: Path
    port: int
    account: pwd.struct_passwd | None
    start_seconds: float = 0.0
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server, with the psycopg (3) driver."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(
            host=HOST, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True, connect_timeout=10
        )

    def create_database(self, prefix: str = "test") -> str:
        """Create a new empty database and return its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections pools still hold to it."""
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as the server's account."""
        return _run(self.bin_dir, self.root, self.account, list(argv), check=check)

    def stop(self) -> None:
        """Stop the server (immediately: nothing is kept) and remove its folder."""
        try:
            if self.data_dir.joinpath("postmaster.pid").exists():
                done = self.run(
                    "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False
                )
                if done.returncode != 0:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(self.data_dir.joinpath("postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


def _run(
    bin_dir: Path, cwd: Path, account: pwd.struct_passwd | None, argv: list[str], *, check: bool
) -> subprocess.CompletedProcess[str]:
    # A plain C locale and a minimal environment: no PG* variables of the caller leak in.
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C", "LANG": "C"}
    as_account: dict[str, Any] = {}
    if account is not None:
        as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env["HOME"] = str(cwd)
    done = subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT_S,
        check=False,
        **as_account,
    )
    if check and done.returncode != 0:
        raise PostgresUnavailable(
            f"{' '.join(argv)} failed with exit code {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done


def start_server() -> PostgresServer:
    """initdb a temporary cluster and start it; the caller stops it with :meth:`PostgresServer.stop`.

    Raises:
        PostgresUnavailable: The binaries are missing (the message says to run ``make postgres``), or
            initdb or the start failed (the message holds their output and the server log).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found in {BIN_GLOB} or on PATH: "
            "run `make postgres` (installs Debian's postgresql package)"
        )
    began = time.perf_counter()
    account = _server_account()
    # Short and world-traversable, so the server's account reaches it and the socket path stays short.
    root = Path(tempfile.mkdtemp(prefix="refinery-pg-", dir="/tmp" if Path("/tmp").is_dir() else None))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=0, account=account)
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        data = str(server.data_dir)
        init = ["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        server.run("initdb", "-D", data, *init)
        settings = {**_SETTINGS, "unix_socket_directories": f"'{root}'"}
        with server.data_dir.joinpath("postgresql.conf").open("a") as conf:
            conf.write("\n# tests/postgres.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        for attempt in range(_START_ATTEMPTS):
            # Another process may take the free port before the server binds it: try a new one.
            server.port = free_port()
            server.log_file.unlink(missing_ok=True)
            options = ["-l", str(server.log_file), "-w", "-t", "60", "-o", f"-p {server.port}"]
            started = server.run("pg_ctl", "-D", data, *options, "start", check=False)
            if started.returncode == 0:
                break
            log = server.log_file.read_text() if server.log_file.exists() else ""
            if "could not bind" not in log or attempt == _START_ATTEMPTS - 1:
                raise PostgresUnavailable(
                    f"pg_ctl start failed with exit code {started.returncode}:\n"
                    f"{started.stdout}{started.stderr}\n--- {server.log_file} ---\n{log[-4000:]}"
                )
    except BaseException:
        server.stop()
        raise
    server.start_seconds = time.perf_counter() - began
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, started on first use and removed at the end."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database on the session's server, as a SQLAlchemy URL; dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a sqlite file under tmp_path, or a new database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("postgres_url"))

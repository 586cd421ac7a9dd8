"""A server in a subprocess for as long as a ``with`` block runs: started in its own session, ready when
``/readyz`` answers 200, stopped with its whole process group.

:func:`served` is what the serving benchmark, the pre-promotion serving check and the HTTP tests use to
run ``bentoml serve`` (or any server with a readiness endpoint) on this machine.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from refinery.errors import RefineryError

HOST = "127.0.0.1"
#: How long a stopped server may take to exit after SIGTERM before it gets SIGKILL.
GRACE_S = 20.0
#: How much of the server's log a :class:`ServerStartError` quotes, in characters.
LOG_TAIL_CHARS = 3000
_POLL_S = 0.25


class ServerStartError(RefineryError):
    """A server did not become ready: it exited first, or its readiness endpoint did not answer 200 in
    time. The message gives the reason and the tail of the server's log."""


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (another process may take it before
    it is used: bind soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies left for an init that does not reap
    them do not count: they hold no resources and no signal ends them)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still a member
        return True
    import psutil

    for member in psutil.process_iter(["status"]):
        try:
            if os.getpgid(member.pid) == pgid and member.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started: SIGTERM to
    its process group, SIGKILL to what is left of the group after ``grace_s`` seconds."""
    pgid = proc.pid
    # Also when the leader has exited already: processes it started may still run in its group.
    if proc.poll() is None or _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # The leader may be gone while children it started (workers) are still shutting down.
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@dataclass(frozen=True)
class ServedProcess:
    """A server :func:`served` started and found ready.

    Attributes:
        pid: Process id of the server (also its process group id).
        base_url: Where it answers, e.g. ``http://127.0.0.1:3000``.
        log_path: The file its stdout and stderr go to.
        process: The server's ``Popen`` (for its exit code; :func:`served` stops it).
    """

    pid: int
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    def running(self) -> bool:
        """Whether the server process has not exited."""
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the server process and all its descendants, summed, in bytes (pages shared
        between them count once per process); 0 once they have exited."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                total += int(proc.memory_info().rss)
        return total

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the server's log (empty when there is none yet)."""
        return read_tail(self.log_path, chars)


def read_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars * 4))  # UTF-8: at most 4 bytes a character
            data = fh.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:]


def _ready(url: str) -> bool:
    # No proxy: a proxy from the environment would answer for 127.0.0.1 instead of the server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(
    proc: subprocess.Popen[bytes], base_url: str, timeout_s: float, log_path: Path, what: str
) -> None:
    """Poll ``<base_url>/readyz`` until it answers 200.

    Raises:
        ServerStartError: ``proc`` exited first, or ``timeout_s`` passed; the message quotes the log.
    """
    deadline = time.monotonic() + timeout_s
    url = f"{base_url.rstrip('/')}/readyz"
    while True:
        if proc.poll() is not None:
            reason = f"{what} exited with code {proc.returncode} before {url} answered 200"
            break
        if _ready(url):
            return
        if time.monotonic() > deadline:
            reason = f"{what} did not answer 200 on {url} within {timeout_s:g} s"
            break
        time.sleep(_POLL_S)
    tail = read_tail(log_path).rstrip()
    raise ServerStartError(f"{reason}; the end of its log ({log_path}):\n{tail or '(empty)'}")


@contextlib.contextmanager
def served(
    argv: Sequence[str],
    env: Mapping[str, str],
    base_url: str,
    ready_timeout_s: float,
    log_path: Path,
    *,
    cwd: Path | None = None,
    grace_s: float = GRACE_S,
) -> Iterator[ServedProcess]:
    """Run a server for the duration of a ``with`` block, ready when the block starts.

    The server starts in a session of its own (so stopping it reaches every process it starts), with
    stdout and stderr written to ``log_path``. On leaving the block, however it is left, its process
    group gets SIGTERM, and SIGKILL after ``grace_s`` seconds.

    Args:
        argv: The server's command line, e.g. the argv of :func:`refinery.serving.serve_command`.
        env: Variables set for the server on top of this process's environment.
        base_url: Where the server will answer, e.g. ``http://127.0.0.1:3000``.
        ready_timeout_s: Longest wait for ``<base_url>/readyz`` to answer 200.
        log_path: The server's log file (created or replaced; its folder is created).
        cwd: The server's working directory (default: this process's).
        grace_s: Seconds between SIGTERM and SIGKILL when stopping it.

    Yields:
        The running server.

    Raises:
        ServerStartError: The server exited, or did not get ready in time (it is stopped first); the
            message gives the reason and the tail of its log.
        ValueError: ``argv`` is empty.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if not argv:
        raise ValueError("argv is empty: give the server's command line")
    what = shlex.join([Path(argv[0]).name, *argv[1:]])
    what = what if len(what) <= 120 else what[:117] + "..."
    with log_path.open("wb") as log_file:
        try:
            proc = subprocess.Popen(
                list(argv),
                env={**os.environ, **env},
                cwd=cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"cannot start {' '.join(argv)}: {exc}") from exc
    try:
        wait_ready(proc, base_url, ready_timeout_s, log_path, f"{what} (pid {proc.pid})")
        yield ServedProcess(pid=proc.pid, base_url=base_url.rstrip("/"), log_path=log_path, process=proc)
    finally:
        stop_group(proc, grace_s)

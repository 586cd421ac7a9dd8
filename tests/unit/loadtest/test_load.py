"""refinery.loadtest.load against a real HTTP server in this process, and refinery.loadtest.process with
real subprocesses.

The server (aiohttp, in a thread with its own event loop) answers each POST as its JSON body says:
``{"status": 503, "delay_s": 0.1}`` waits 0.1 s, then answers 503. It records how many requests it
got, when, and the most it had in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
from aiohttp import web

from refinery.errors import RefineryError
from refinery.loadtest.load import LoadResult, run_load
from refinery.loadtest.process import HOST, ServerStartError, free_port, served


@dataclass
class Seen:
    """What the test server saw."""

    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class Server:
    """The test server: :attr:`url` to POST to, :attr:`seen` reset by :meth:`reset`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/answer"
        self.seen = Seen()
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/answer", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, HOST, self.port).start())
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _answer(self, request: web.Request) -> web.Response:
        spec = await request.json()
        seen = self.seen
        seen.arrivals.append(time.perf_counter())
        seen.in_flight += 1
        seen.max_in_flight = max(seen.max_in_flight, seen.in_flight)
        try:
            await asyncio.sleep(spec.get("delay_s", 0))
            status = spec.get("status", 200)
            return web.json_response({"status": status, "why": "as asked"}, status=status)
        finally:
            seen.in_flight -= 1

    def reset(self) -> Seen:
        self.seen = Seen()
        return self.seen

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def seen(server: Server) -> Seen:
    return server.reset()


def body(status: int = 200, delay_s: float = 0.0) -> bytes:
    return json.dumps({"status": status, "delay_s": delay_s}).encode()


def test_counts_statuses_latencies_and_keeps_error_bodies(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body(200), body(503)], concurrency=4, requests=20)

    assert result.sent == 20 and len(seen.arrivals) == 20
    assert result.status_counts == {200: 10, 503: 10}
    assert (result.ok, result.server_errors, result.errors, result.transport_errors) == (10, 10, 10, 0)
    assert len(result.latencies_ms) == 20
    assert result.p50_ms == pytest.approx(np.percentile(result.latencies_ms, 50))
    assert result.p50_ms <= result.p95_ms <= result.p99_ms
    assert result.throughput_per_s == pytest.approx(10 / result.elapsed_s)
    assert len(result.error_bodies) == 5
    assert all(b.startswith("503: ") and "as asked" in b for b in result.error_bodies)
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["status_counts"] == {"200": 10, "503": 10}
    assert as_json["ok"] == 10 and "latencies_ms" not in as_json
    assert len(result.to_dict(latencies=True)["latencies_ms"]) == 20
    back = LoadResult.from_dict(json.loads(json.dumps(result.to_dict(latencies=True))))
    assert (back.status_counts, back.latencies_ms, back.ok) == (result.status_counts, result.latencies_ms, 10)


def test_latencies_measure_the_wait(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body(delay_s=0.05)], concurrency=2, requests=6)
    assert result.ok == 6
    assert 50 <= result.p50_ms < 1000
    assert min(result.latencies_ms) >= 50


def test_closed_loop_keeps_concurrency_requests_in_flight_and_no_more(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body(delay_s=0.1)], concurrency=3, requests=12, warmup=4)

    assert result.sent == 12 and result.ok == 12
    assert len(seen.arrivals) == 16  # the warm-up reached the server but is not counted
    assert seen.max_in_flight == 3
    assert result.elapsed_s >= 0.4  # 12 requests, 3 at a time, 0.1 s each


def test_closed_loop_stops_after_duration(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body(delay_s=0.05)], concurrency=2, duration_s=0.4)
    assert 4 <= result.sent <= 18
    assert 0.4 <= result.elapsed_s < 1.5
    assert result.errors == 0


def test_open_loop_starts_requests_at_the_rate(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body()], concurrency=8, duration_s=1.0, rate_per_s=40)

    assert result.rate_per_s == 40
    assert result.sent == 40 and result.late == 0 and result.ok == 40
    span = seen.arrivals[-1] - seen.arrivals[0]
    assert 0.8 < span < 1.3  # 39 intervals of 25 ms
    assert seen.max_in_flight <= 8


def test_open_loop_counts_starts_it_could_not_make_as_late(server: Server, seen: Seen) -> None:
    # 50 starts scheduled in 0.5 s, one slot, each request holding it for 0.1 s: most find it busy.
    result = run_load(server.url, [body(delay_s=0.1)], concurrency=1, duration_s=0.5, rate_per_s=100)

    assert result.sent + result.late == 50
    assert 3 <= result.sent <= 8
    assert seen.max_in_flight == 1


def test_open_loop_stops_after_requests(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body()], concurrency=4, requests=10, rate_per_s=100)
    assert result.sent == 10 and len(seen.arrivals) == 10
    assert 0.08 <= result.elapsed_s < 1.0


def test_a_refused_port_gives_transport_errors() -> None:
    url = f"http://{HOST}:{free_port()}/answer"  # nothing listens there
    result = run_load(url, [body()], concurrency=2, requests=5)

    assert result.sent == 5 and result.transport_errors == 5 and result.errors == 5
    assert result.status_counts == {} and result.ok == 0 and result.throughput_per_s == 0
    assert len(result.latencies_ms) == 0 and np.isnan(result.p99_ms)
    assert result.transport_error_examples and "Connect" in result.transport_error_examples[0]
    assert result.to_dict()["p99_ms"] is None


def test_a_request_past_the_timeout_is_a_transport_error(server: Server, seen: Seen) -> None:
    result = run_load(server.url, [body(delay_s=2.0)], concurrency=1, requests=1, timeout_s=0.2)
    assert result.transport_errors == 1 and result.ok == 0
    assert result.transport_error_examples[0].startswith(("TimeoutError", "ServerTimeoutError"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give requests or duration_s"),
        ({"requests": 0}, "requests must be at least 1"),
        ({"requests": 1, "rate_per_s": 0}, "rate_per_s must be positive"),
    ],
)
def test_bad_arguments_are_refused(server: Server, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_load(server.url, [body()], 1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bodies is empty"):
        run_load(server.url, [], 1, requests=1)


# -- served(): real subprocesses -------------------------------------------------------------------------

READY_SERVER = textwrap.dedent(
    """
    import http.server, os, signal, subprocess, sys, time

    if sys.argv[2] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A child in the server's process group, as a worker process would be.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child {child.pid}", flush=True)

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_served_raises_with_the_log_tail_when_the_server_exits_at_once(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with (
        pytest.raises(ServerStartError, match=r"(?s)exited with code 3 before .*/readyz.*boom") as raised,
        served(argv, {}, f"http://{HOST}:{free_port()}", 30, tmp_path / "server.log"),
    ):
        pytest.fail("the block must not run")
    assert isinstance(raised.value, RefineryError)
    assert str(tmp_path / "server.log") in str(raised.value)


def test_served_raises_and_stops_a_server_that_never_gets_ready(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import os, time; print('pid', os.getpid(), flush=True); time.sleep(600)"]
    with (
        pytest.raises(ServerStartError, match=r"did not answer 200 on .*/readyz within 0.5 s") as raised,
        served(argv, {}, f"http://{HOST}:{free_port()}", 0.5, tmp_path / "server.log"),
    ):
        pytest.fail("the block must not run")
    pid = int(str(raised.value).split("pid ")[-1].split()[0])
    assert _gone(pid)


@pytest.mark.parametrize("on_term", ["exit", "ignore-term"])
def test_served_stops_the_server_and_its_children(tmp_path: Path, on_term: str) -> None:
    script = tmp_path / "ready_server.py"
    script.write_text(READY_SERVER)
    port = free_port()
    log_path = tmp_path / "server.log"
    with served(
        [sys.executable, str(script), str(port), on_term],
        {"EXTRA": "1"},
        f"http://{HOST}:{port}",
        30,
        log_path,
        grace_s=0.5,
    ) as server:
        assert server.running()
        assert server.base_url == f"http://{HOST}:{port}"
        children = psutil.Process(server.pid).children(recursive=True)
        assert len(children) == 1
        own = psutil.Process(server.pid).memory_info().rss
        assert server.rss_bytes() > own > 0  # the child counts too
        assert "child " in server.log_tail()
    assert not server.running()
    assert _gone(server.pid) and _gone(children[0].pid)
    assert server.rss_bytes() == 0

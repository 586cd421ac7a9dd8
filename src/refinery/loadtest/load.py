"""Bounded HTTP load against a JSON endpoint, for the serving benchmark and the pre-promotion serving check.

Two ways to load a server:

- **closed loop** (the default): ``concurrency`` workers each POST one request at a time, the next as
  soon as the last is answered, until ``requests`` were sent or ``duration_s`` passed. It measures the
  most the server answers at that concurrency.
- **open loop** (``rate_per_s``): requests start on a fixed schedule, ``rate_per_s`` a second, whatever
  the server does, with at most ``concurrency`` in flight. A start that finds every slot busy is not
  made and is counted as ``late``: a server that keeps up has none. It measures how a server holds a
  given traffic over time (a soak).

Bodies are sent round-robin as ``application/json``. A request is *answered* when an HTTP status came
back (any status); a *transport error* is one that got none (refused connection, reset, timeout). The
client is aiohttp, which spends less CPU per request than httpx: the load generator often shares the
machine's cores with the server it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from refinery.results import Record

#: How many examples of transport errors and of non-2xx answer bodies a result keeps.
MAX_EXAMPLES = 5
#: How much of a non-2xx answer's body an example keeps, in characters.
MAX_BODY_CHARS = 500


@dataclass(frozen=True)
class LoadResult(Record):
    """What one load run sent and got back.

    Attributes:
        concurrency: Most requests in flight at once (the number of workers in a closed loop).
        sent: Requests sent, not counting the warm-up (answered plus transport errors).
        elapsed_s: Seconds from the first measured request's start until the last one finished.
        status_counts: HTTP status -> how many answers had it.
        transport_errors: Requests that got no HTTP answer (timeout, reset, refused connection).
        transport_error_examples: The first few transport errors, as ``Type: message``.
        latencies_ms: Latency of every answered request (any status), in milliseconds, in completion order.
        error_bodies: The first few non-2xx answers, as ``status: body`` (the body cut short).
        rate_per_s: The open loop's start rate; None for a closed loop.
        late: Open loop only: scheduled starts not made because ``concurrency`` requests were in flight.
    """

    concurrency: int
    sent: int
    elapsed_s: float
    status_counts: dict[int, int]
    transport_errors: int
    transport_error_examples: tuple[str, ...]
    latencies_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)
    error_bodies: tuple[str, ...] = ()
    rate_per_s: float | None = None
    late: int = 0

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(n for status, n in self.status_counts.items() if 200 <= status < 300)

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for status, n in self.status_counts.items() if status >= 500)

    @property
    def errors(self) -> int:
        """Requests that failed: non-2xx answers plus transport errors."""
        return self.sent - self.ok

    @property
    def throughput_per_s(self) -> float:
        """2xx answers per second of :attr:`elapsed_s` (0.0 when nothing ran)."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of :attr:`latencies_ms` (``np.percentile``); nan when nothing was answered."""
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    @property
    def p50_ms(self) -> float:
        """Median latency of answered requests, in ms (nan when none)."""
        return self.percentile_ms(50)

    @property
    def p95_ms(self) -> float:
        """95th percentile latency of answered requests, in ms (nan when none)."""
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float:
        """99th percentile latency of answered requests, in ms (nan when none)."""
        return self.percentile_ms(99)

    def to_dict(self, *, latencies: bool = False) -> dict[str, Any]:
        """Plain JSON form: the fields and the derived figures (ok, errors, throughput, percentiles),
        rounded; :meth:`from_dict` reads it back (the derived figures are recomputed).

        Args:
            latencies: Include every latency (``latencies_ms`` as a list); by default only the
                percentiles are.

        Percentiles of an empty run are None (JSON has no nan).
        """

        def number(value: float) -> float | None:
            return None if np.isnan(value) else round(value, 3)

        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "rate_per_s": self.rate_per_s,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "late": self.late,
            "elapsed_s": round(self.elapsed_s, 4),
            "throughput_per_s": round(self.throughput_per_s, 3),
            "p50_ms": number(self.p50_ms),
            "p95_ms": number(self.p95_ms),
            "p99_ms": number(self.p99_ms),
            "status_counts": {str(status): n for status, n in sorted(self.status_counts.items())},
            "transport_error_examples": list(self.transport_error_examples),
            "error_bodies": list(self.error_bodies),
        }
        if latencies:
            out["latencies_ms"] = list(self.latencies_ms)
        return out


class _Tally:
    """What the requests of one run saw; filled by :func:`_post` as they complete."""

    def __init__(self) -> None:
        self.sent = 0
        self.status_counts: dict[int, int] = {}
        self.latencies_ms: list[float] = []
        self.transport_errors = 0
        self.transport_examples: list[str] = []
        self.error_bodies: list[str] = []

    def result(self, concurrency: int, elapsed_s: float, rate_per_s: float | None, late: int) -> LoadResult:
        return LoadResult(
            concurrency=concurrency,
            sent=self.sent,
            elapsed_s=elapsed_s,
            status_counts=dict(sorted(self.status_counts.items())),
            transport_errors=self.transport_errors,
            transport_error_examples=tuple(self.transport_examples),
            latencies_ms=tuple(self.latencies_ms),
            error_bodies=tuple(self.error_bodies),
            rate_per_s=rate_per_s,
            late=late,
        )


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str], tally: _Tally
) -> None:
    """POST one body and record its status and latency, or its transport error."""
    tally.sent += 1
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        tally.transport_errors += 1
        if len(tally.transport_examples) < MAX_EXAMPLES:
            message = str(exc).strip()
            tally.transport_examples.append(
                f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            )
        return
    tally.latencies_ms.append((time.perf_counter() - started) * 1000.0)
    tally.status_counts[status] = tally.status_counts.get(status, 0) + 1
    if not 200 <= status < 300 and len(tally.error_bodies) < MAX_EXAMPLES:
        text = payload.decode("utf-8", errors="replace")[:MAX_BODY_CHARS]
        tally.error_bodies.append(f"{status}: {text}")


async def _closed_loop(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str],
    concurrency: int,
    requests: int | None,
    deadline: float | None,
    tally: _Tally,
) -> None:
    """``concurrency`` workers, one request each at a time, until ``requests`` or ``deadline``
    (``time.perf_counter``)."""
    claimed = 0

    async def worker() -> None:
        nonlocal claimed
        while (requests is None or claimed < requests) and (
            deadline is None or time.perf_counter() < deadline
        ):
            body = bodies[claimed % len(bodies)]
            claimed += 1  # one event loop: no other worker runs between the check and this
            await _post(session, url, body, headers, tally)

    workers = concurrency if requests is None else min(concurrency, requests)
    await asyncio.gather(*(worker() for _ in range(workers)))


async def _open_loop(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str],
    concurrency: int,
    rate_per_s: float,
    requests: int | None,
    started: float,
    deadline: float | None,
    tally: _Tally,
) -> int:
    """Start one request every ``1 / rate_per_s`` seconds from ``started``, at most ``concurrency`` in
    flight, until ``requests`` were sent or ``deadline`` (both ``time.perf_counter``); returns how many
    starts found every slot busy (late)."""
    in_flight: set[asyncio.Task[None]] = set()
    late = made = tick = 0
    while requests is None or made < requests:
        due = started + tick / rate_per_s
        if deadline is not None and due >= deadline:
            break
        # Sleeping even when the start is overdue lets answered requests free their slots first; an
        # overdue start is made at once, so the schedule catches up after a stall instead of drifting.
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tick += 1
        if len(in_flight) >= concurrency:
            late += 1
            continue
        task = asyncio.create_task(_post(session, url, bodies[made % len(bodies)], headers, tally))
        made += 1
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)
    return late


async def run_load_async(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    rate_per_s: float | None = None,
    warmup: int = 0,
    timeout_s: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """The coroutine behind :func:`run_load`, for callers already inside an event loop.

    Arguments, result and errors are :func:`run_load`'s.
    """
    _check_arguments(bodies, concurrency, requests, duration_s, rate_per_s, warmup, timeout_s)
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    # One connection per slot, kept alive between requests, as a pool of real clients would.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup:
            await _closed_loop(session, url, bodies, sent_headers, concurrency, warmup, None, _Tally())
        tally = _Tally()
        started = time.perf_counter()
        deadline = started + duration_s if duration_s is not None else None
        late = 0
        if rate_per_s is None:
            await _closed_loop(session, url, bodies, sent_headers, concurrency, requests, deadline, tally)
        else:
            late = await _open_loop(
                session,
                url,
                bodies,
                sent_headers,
                concurrency,
                rate_per_s,
                requests,
                started,
                deadline,
                tally,
            )
        elapsed = time.perf_counter() - started
    return tally.result(concurrency, elapsed, rate_per_s, late)


def run_load(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    rate_per_s: float | None = None,
    warmup: int = 0,
    timeout_s: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST ``bodies`` round-robin to ``url`` under bounded load and measure the answers.

    Closed loop unless ``rate_per_s`` is given (see the module). The run stops when ``requests`` were
    sent or ``duration_s`` passed, whichever comes first; requests in flight then are waited for (each
    at most ``timeout_s``) and counted.

    Args:
        url: The endpoint, e.g. ``http://127.0.0.1:3000/classify``.
        bodies: JSON request bodies, sent in turn (the first again after the last).
        concurrency: Most requests in flight at once; in a closed loop, the number of workers.
        requests: Stop after this many requests (warm-up not counted).
        duration_s: Stop starting requests after this many seconds.
        rate_per_s: Open loop: start this many requests a second.
        warmup: Requests sent first, closed loop at ``concurrency``, and not counted.
        timeout_s: Longest a request may take, connecting included; longer is a transport error.
        headers: Extra request headers (``Content-Type: application/json`` is always sent unless
            overridden here).

    Returns:
        Counts by status, transport errors, latencies of the answered requests, and the first few
        error answers.

    Raises:
        ValueError: No body, neither ``requests`` nor ``duration_s``, or a number out of range.
        RuntimeError: Called from a running event loop (use :func:`run_load_async` there).
    """
    return asyncio.run(
        run_load_async(
            url,
            bodies,
            concurrency,
            requests=requests,
            duration_s=duration_s,
            rate_per_s=rate_per_s,
            warmup=warmup,
            timeout_s=timeout_s,
            headers=headers,
        )
    )


def _check_arguments(
    bodies: Sequence[bytes],
    concurrency: int,
    requests: int | None,
    duration_s: float | None,
    rate_per_s: float | None,
    warmup: int,
    timeout_s: float,
) -> None:
    if not bodies:
        raise ValueError("bodies is empty: give at least one request body")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if requests is None and duration_s is None:
        raise ValueError("give requests or duration_s (or both): the run needs an end")
    if requests is not None and requests < 1:
        raise ValueError(f"requests must be at least 1, got {requests}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    if warmup < 0:
        raise ValueError(f"warmup must not be negative, got {warmup}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")

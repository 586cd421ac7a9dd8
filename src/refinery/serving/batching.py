"""Adaptive batching of single requests into forward passes of the model.

Requests arrive one text (or a few) at a time; the model is fastest on batches. The :class:`Batcher`
queues each request's texts and one worker feeds the model: whenever it is free it takes what is queued
(oldest first, at most ``max_batch_size`` texts), groups those texts by length so that padding stays
small, and runs one forward pass per group in a thread, so the event loop goes on accepting requests
meanwhile. The batch size therefore adapts to the load with no fixed window: an idle service answers a
lone request at once, a busy one batches whatever arrived during the previous pass. ``max_wait_ms`` can
add a short wait for more texts when a batch is not full.

The queue is bounded: a request that would push it past ``max_queued`` texts is refused at once with
:class:`Overloaded` (the service answers 503 with Retry-After) instead of waiting behind a backlog it
would time out in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from refinery.errors import RefineryError

T = TypeVar("T")

#: A text may be padded by at most this share of its group's longest text (lengths in characters stand in
#: for tokens: the tokenizer runs inside the forward pass).
MAX_PADDING_SHARE = 0.25
#: About 8 tokens: padding this short is cheaper than another forward pass.
PADDING_SLACK_CHARS = 32


class Overloaded(RefineryError):
    """The service's queue is full; the client should retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def length_groups(
    lengths: Sequence[int], max_padding_share: float = MAX_PADDING_SHARE, slack: int = PADDING_SLACK_CHARS
) -> list[list[int]]:
    """Indices of ``lengths`` in groups of similar length, longest first.

    Sorted longest first, a group takes the next item while that item is at least ``1 -
    max_padding_share`` of the group's longest minus ``slack`` (a few tokens of padding cost nothing
    worth a forward pass of its own).

    Args:
        lengths: One length per item.
        max_padding_share: Most padding per item, as a share of the group's longest.
        slack: Padding always allowed, in the unit of ``lengths``.

    Returns:
        Groups of indices into ``lengths``; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] >= (1 - max_padding_share) * lengths[groups[-1][0]] - slack:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class _Request(Generic[T]):
    texts: list[str]
    future: asyncio.Future[list[T]]
    results: list[T | None] = field(default_factory=list)
    pending: int = 0


class Batcher(Generic[T]):
    """Collects texts from concurrent requests into length-grouped forward passes of ``predict``.

    Use from one event loop; ``predict`` runs in a dedicated thread, one call at a time.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[T]],
        *,
        max_batch_size: int,
        max_queued: int,
        max_wait_ms: float = 0.0,
        retry_after_s: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Set the batcher up; its worker starts with the first request.

        Args:
            predict: Maps a list of texts to one result per text, in order (the model's forward pass).
            max_batch_size: Most texts taken from the queue for one round of forward passes.
            max_queued: Most texts waiting; a request that would exceed it is refused (:class:`Overloaded`).
            max_wait_ms: How long a round waits for more texts while it has fewer than ``max_batch_size``.
            retry_after_s: The wait an :class:`Overloaded` refusal suggests.
            on_batch: Called with the size of every forward pass (for the batch-size histogram).

        Raises:
            ValueError: A size is not positive or the wait is negative.
        """
        if max_batch_size < 1 or max_queued < 1:
            raise ValueError(f"max_batch_size ({max_batch_size}) and max_queued ({max_queued}) must be >= 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.max_wait_s = max_wait_ms / 1000
        self.retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._queue: deque[tuple[_Request[T], int]] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refinery-model")
        self._closed = False
        self._busy = False

    @property
    def queued(self) -> int:
        """Texts waiting for the model."""
        return len(self._queue)

    async def submit(self, texts: list[str]) -> list[T]:
        """Queue ``texts`` and wait for their results, in order.

        Raises:
            Overloaded: The queue has no room for ``texts`` (nothing was queued).
            RuntimeError: The batcher is closed.
            Exception: Whatever ``predict`` raised for the forward pass that held these texts.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if len(self._queue) + len(texts) > self.max_queued:
            raise Overloaded(
                f"the service is overloaded: {len(self._queue)} texts are waiting for the model (at most"
                f" {self.max_queued}, serving.max_queued_texts); retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        request: _Request[T] = _Request(texts, loop.create_future(), [None] * len(texts), len(texts))
        self._queue.extend((request, i) for i in range(len(texts)))
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            # First request, or the first on a new event loop (the old loop's worker died with it).
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="refinery-batcher")
        assert self._wake is not None
        self._wake.set()
        return await request.future

    async def _take(self) -> list[tuple[_Request[T], int]]:
        assert self._wake is not None
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        if self.max_wait_s and len(self._queue) < self.max_batch_size:
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
        n = min(self.max_batch_size, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._take()
            self._busy = True
            items = [(request, i) for request, i in items if not request.future.done()]
            texts = [request.texts[i] for request, i in items]
            for group in length_groups([len(t) for t in texts]):
                batch = [texts[j] for j in group]
                try:
                    results = await loop.run_in_executor(self._executor, self._predict, batch)
                    if len(results) != len(batch):
                        raise RuntimeError(f"predict returned {len(results)} results for {len(batch)} texts")
                except Exception as exc:
                    for j in group:
                        future = items[j][0].future
                        if not future.done():
                            future.set_exception(exc)
                    continue
                if self._on_batch is not None:
                    self._on_batch(len(batch))
                for j, result in zip(group, results, strict=True):
                    request, i = items[j]
                    request.results[i] = result
                    request.pending -= 1
                    if request.pending == 0 and not request.future.done():
                        request.future.set_result(list(request.results))  # type: ignore[arg-type]
            self._busy = False

    async def close(self) -> None:
        """Refuse new requests, let queued ones finish, then stop the worker and its thread."""
        self._closed = True
        while self._queue or self._busy:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

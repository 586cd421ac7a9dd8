"""The batcher: concurrent requests share forward passes, each gets its own results, the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from refinery.serving.batching import Batcher, Overloaded, length_groups


class Recorder:
    """A forward pass that tags each text with the pass it ran in, and records the pass sizes."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.seconds = seconds
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> list[tuple[int, str]]:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        self.batches.append(list(texts))
        return [(len(self.batches), text.upper()) for text in texts]


def test_length_groups_keep_padding_small_and_cover_every_index() -> None:
    lengths = [5, 200, 7, 190, 6, 60, 180, 8]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in g) for g in groups] == [[180, 190, 200], [60], [5, 6, 7, 8]]
    assert length_groups([400, 320, 250], slack=0) == [[0, 1], [2]]
    assert length_groups([10] * 40) == [list(range(40))]
    assert length_groups([]) == []


def test_concurrent_requests_share_passes_and_each_gets_its_own_results() -> None:
    forward = Recorder(seconds=0.02)
    batcher = Batcher(forward, max_batch_size=16, max_queued=1000)
    # Mixed lengths, some requests with several texts: every answer must be its own, in its order.
    requests = [[f"r{r}-t{t}-" + "x" * ((r * 37 + t * 11) % 90) for t in range(1 + r % 3)] for r in range(40)]

    async def run() -> list[list[tuple[int, str]]]:
        return await asyncio.gather(*(batcher.submit(texts) for texts in requests))

    answers = asyncio.run(run())

    for texts, answer in zip(requests, answers, strict=True):
        assert [upper for _, upper in answer] == [t.upper() for t in texts]
    sizes = [len(b) for b in forward.batches]
    assert sum(sizes) == sum(len(t) for t in requests)
    assert max(sizes) > 1, "concurrent requests were never batched"
    assert max(sizes) <= 16
    assert forward.threads == {"refinery-model_0"}, "the model runs in the batcher's own thread"
    for batch in forward.batches:  # each pass holds texts of similar length
        lengths = [len(t) for t in batch]
        assert min(lengths) >= 0.75 * max(lengths) - 32


def test_a_lone_request_is_not_held_back() -> None:
    forward = Recorder()
    batcher = Batcher(forward, max_batch_size=32, max_queued=100)
    started = time.perf_counter()
    assert asyncio.run(batcher.submit(["alone"])) == [(1, "ALONE")]
    assert time.perf_counter() - started < 0.5
    assert [len(b) for b in forward.batches] == [1]


def test_wait_gathers_texts_that_arrive_a_moment_apart() -> None:
    forward = Recorder()
    batcher = Batcher(forward, max_batch_size=8, max_queued=100, max_wait_ms=200)

    async def run() -> None:
        first = asyncio.ensure_future(batcher.submit(["early"]))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, batcher.submit(["late"]))

    asyncio.run(run())
    assert sorted(sorted(b) for b in forward.batches) == [["early", "late"]]


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    forward = Recorder()
    batcher = Batcher(forward, max_batch_size=4, max_queued=3, retry_after_s=7)

    async def run() -> list[object]:
        # All submitted before the worker runs: three texts fit, the rest are refused.
        return await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(5)), return_exceptions=True)

    outcomes = asyncio.run(run())
    assert [o for o in outcomes if not isinstance(o, Exception)] == [[(1, "T0")], [(1, "T1")], [(1, "T2")]]
    refusals = [o for o in outcomes if isinstance(o, Overloaded)]
    assert len(refusals) == 2
    assert all(r.retry_after_s == 7 for r in refusals)
    assert "3 texts are waiting for the model (at most 3, serving.max_queued_texts)" in str(refusals[0])


def test_a_failed_pass_fails_only_its_requests() -> None:
    def forward(texts: list[str]) -> list[str]:
        if any("boom" in t for t in texts):
            raise ValueError("the model failed")
        return [t.upper() for t in texts]

    batcher = Batcher(forward, max_batch_size=8, max_queued=100)

    async def run() -> list[object]:
        # "boom" is far longer than the others, so it is alone in its length group.
        texts = ["ok one", "boom" + "!" * 200, "ok two"]
        return await asyncio.gather(*(batcher.submit([t]) for t in texts), return_exceptions=True)

    first, failed, third = asyncio.run(run())
    assert (first, third) == (["OK ONE"], ["OK TWO"])
    assert isinstance(failed, ValueError)
    assert asyncio.run(batcher.submit(["after"])) == ["AFTER"], "the worker survives a failed pass"


def test_close_answers_what_is_queued_then_refuses() -> None:
    forward = Recorder(seconds=0.05)
    batcher = Batcher(forward, max_batch_size=2, max_queued=100)

    async def run() -> list[list[tuple[int, str]]]:
        pending = [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(6)]
        await asyncio.sleep(0)
        await batcher.close()
        assert all(p.done() for p in pending)
        return [p.result() for p in pending]

    answers = asyncio.run(run())
    assert [a[0][1] for a in answers] == [f"T{i}" for i in range(6)]
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(batcher.submit(["late"]))


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(Recorder(), max_batch_size=0, max_queued=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        Batcher(Recorder(), max_batch_size=1, max_queued=1, max_wait_ms=-1)

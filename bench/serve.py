"""Benchmark: serving throughput and latency of the packaged Bento, against the model's own limit and a
naive FastAPI server, on SST-2 sentences.

What it measures
    One model (``--model DIR``, a ``save_pretrained`` folder; by default the demo champion of
    configs/demo.yaml's registry) and the same texts (the 872 sentences of ``../shared/data/sst2/dev.csv``)
    three ways, one after another, so that no two compete for the cores:

    - **limit**: the model's raw batched forward pass in a process of its own,
      ``refinery.modeling.load_classifier(model).predict_proba`` on consecutive batches of b texts (in
      arrival order, each padded to its own longest) for b in 1, 8, 32, 64 (tokenisation included, torch threads = the CPUs this process may use); the best
      texts/s is the limit. No HTTP, no JSON, no log.
    - **peer**: bench/peer_server.py, a server as a user would first write it: FastAPI, a
      ``transformers.pipeline("text-classification")`` called per request in a plain ``def`` endpoint,
      uvicorn with one worker, in a subprocess.
    - **refinery**: the model packaged as refinery packages it (``refinery.packaging.bento.package`` with
      configs/demo.yaml, state in a temporary folder), fetched into a temporary BentoML home and served by
      ``refinery.serving.serve_command`` (``bentoml serve``) in a subprocess, with the inference log on
      (sqlite in the temporary folder): every prediction is queued for it and written in batches.

    Both servers get single-text requests, ``POST /classify {"texts": "<one sentence>"}``, the sentences
    in turn, from :func:`refinery.loadtest.load.run_load` (aiohttp) in this process: a closed loop at each
    concurrency (1, 8, 32, 128 by default), ``--requests`` requests per level after a warm-up of
    ``max(--warmup, concurrency)`` requests that are not counted. Throughput counts 2xx answers;
    latencies are those of every answered request. The load generator shares the machine's cores with
    the server it measures, as the limit's process does not: on a small machine that is part of what
    the servers' figures pay.

Targets (at concurrency 32 unless said): refinery's throughput at least 80% of the limit, at least 3x
the peer's, its p99 at most 500 ms; at concurrency 1 its p50 at most 20% above the peer's.

Soak (``--soak SECONDS``, refinery only): after the warm-up, refinery's throughput at concurrency 32
(or ``--rate``) is measured, then an open loop runs at 80% of it for SECONDS, at most ``max(--concurrency)``
requests in flight. Targets: no 5xx, no transport errors, p99 at most 500 ms, RSS of the server's process
tree at the end less than 5% above the RSS after the warm-up, and as many inference-log rows as 2xx
answers the server gave, warm-up included (the service writes the log off the request path, so it is read
after the server stopped).

Run:  python bench/serve.py [--model DIR] [--concurrency 1,8,32,128] [--requests N] [--warmup W]
                            [--arms limit,peer,refinery] [--timeout S] [--json PATH]
      python bench/serve.py --soak SECONDS [--rate R] [--model DIR] [--json PATH]
Exit: 0 when every target is met, 1 when one is missed or could not be measured, 2 when the data or the
model is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.loadtest.load import LoadResult
    from refinery.loadtest.process import ServedProcess

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.csv"
PEER_SERVER = REPO / "bench" / "peer_server.py"
ARMS = ("limit", "peer", "refinery", "refinery-int8")
BATCH_SIZES = (1, 8, 32, 64)
READY_TIMEOUT_S = 300.0

AT = 32  # the concurrency the throughput and p99 targets are read at
LIMIT_SHARE = 0.80
PEER_RATIO = 3.0
P99_MS = 500.0
P50_SLACK = 0.20
SOAK_RATE_SHARE = 0.80
RSS_GROWTH = 0.05
RSS_SAMPLE_S = 5.0
# Servers answer offline and phone nowhere.
QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
}

_STARTED = time.monotonic()


class MissingInput(Exception):
    """The data or the model is not there (exit 2)."""


def step(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.monotonic() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def available_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def read_texts(path: Path) -> list[str]:
    """The ``text`` column of an SST-2 CSV."""
    import pandas as pd

    if not path.is_file():
        raise MissingInput(f"SST-2 data not found: {path} (expected beside the repository)")
    frame = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
    return [t for t in frame["text"] if t.strip()]


# -- the model -----------------------------------------------------------------------------------------


def demo_config(overrides: Sequence[str] = ()) -> RunConfig:
    from refinery.config import load_config

    return load_config(DEMO_CONFIG, list(overrides), base=REPO)


@dataclass(frozen=True)
class Model:
    """The model under test: its folder, the version it is packaged as, and what to call it."""

    path: Path
    version: str
    description: str


def demo_champion(into: Path) -> Model:
    """configs/demo.yaml's champion, downloaded from its registry into ``into``."""
    from refinery.registry.mlflow_registry import Registry

    cfg = demo_config()
    hint = "run `make demo` first, or pass --model DIR (a save_pretrained folder)"
    # The demo's registry is a sqlite file under state_dir; opening a missing one would create it.
    if not (Path(str(cfg.state_dir)) / "mlflow.db").is_file():
        raise MissingInput(f"no demo registry at {cfg.state_dir}/mlflow.db: {hint}")
    registry = Registry(cfg.registry)
    champion = registry.champion(cfg.gitops.environment, legacy=True)
    if champion is None:
        raise MissingInput(f"{cfg.registry.model_name} has no champion of {cfg.gitops.environment}: {hint}")
    model_dir = registry.download(champion.version, "model", into)
    return Model(model_dir, champion.version, f"demo champion {cfg.registry.model_name} v{champion.version}")


def limit_worker(model_dir: Path, max_length: int, threads: int, data: Path, out: Path) -> None:
    """In a process of its own: texts/s of ``predict_proba`` per batch size, written to ``out``."""
    import torch

    from refinery.modeling import load_classifier

    torch.set_num_threads(threads)
    texts = read_texts(data)
    classifier = load_classifier(model_dir, max_length=max_length)
    rates: dict[int, float] = {}
    for batch in BATCH_SIZES:
        classifier.predict_proba(texts[: 2 * batch], batch_size=batch)  # warm
        started = time.perf_counter()
        # Batches of texts in arrival order (each padded to its own longest), as a server meets them:
        # predict_proba over all texts at once would sort the whole set by length first, a padding no
        # server gets to choose.
        for start in range(0, len(texts), batch):
            classifier.predict_proba(texts[start : start + batch], batch_size=batch)
        rates[batch] = len(texts) / (time.perf_counter() - started)
        step(f"limit: batch {batch}: {rates[batch]:.1f} texts/s")
    out.write_text(json.dumps({str(b): r for b, r in rates.items()}))


@dataclass(frozen=True)
class Limit:
    """The limit arm: texts/s per batch size."""

    texts_per_s: dict[int, float]
    threads: int

    @property
    def best_batch(self) -> int:
        return max(self.texts_per_s, key=lambda b: self.texts_per_s[b])

    @property
    def best(self) -> float:
        return self.texts_per_s[self.best_batch]


def measure_limit(model_dir: Path, max_length: int, data: Path, work: Path) -> Limit:
    import subprocess

    threads = available_cpus()
    out = work / "limit.json"
    argv = [sys.executable, __file__, "--limit-worker", str(out), "--model", str(model_dir)]
    argv += ["--max-length", str(max_length), "--threads", str(threads), "--data", str(data)]
    done = subprocess.run(argv, env={**os.environ, **QUIET_ENV}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the limit's process failed (exit {done.returncode}); its output is above")
    rates = {int(b): float(r) for b, r in json.loads(out.read_text()).items()}
    return Limit(rates, threads)


# -- the servers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """How each concurrency level is run."""

    bodies: list[bytes]
    levels: tuple[int, ...]
    requests: int
    warmup: int
    timeout_s: float


@dataclass
class Arm:
    """A server arm's results: one LoadResult per concurrency level."""

    name: str
    levels: dict[int, LoadResult] = field(default_factory=dict)
    failure: str | None = None

    def at(self, concurrency: int) -> LoadResult | None:
        return self.levels.get(concurrency)


def check_answers(url: str, load: Load) -> LoadResult:
    """One request, which must be answered 2xx: a broken server fails here with its answer."""
    from refinery.loadtest.load import run_load

    probe = run_load(url, load.bodies[:1], 1, requests=1, timeout_s=load.timeout_s)
    if probe.ok != 1:
        why = [*probe.error_bodies, *probe.transport_error_examples]
        raise RuntimeError(f"{url} did not answer a request with 2xx: {'; '.join(why)}")
    return probe


def run_levels(arm: Arm, url: str, load: Load) -> None:
    from refinery.loadtest.load import run_load

    check_answers(url, load)
    for concurrency in load.levels:
        result = run_load(
            url,
            load.bodies,
            concurrency,
            requests=load.requests,
            warmup=max(load.warmup, concurrency),
            timeout_s=load.timeout_s,
        )
        arm.levels[concurrency] = result
        step(
            f"{arm.name}: concurrency {concurrency}: {result.throughput_per_s:.1f} req/s,"
            f" p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, {result.errors} errors"
        )
        for example in [*result.error_bodies[:2], *result.transport_error_examples[:2]]:
            step(f"{arm.name}:   e.g. {example}")


@contextmanager
def peer_server(model_dir: Path, work: Path) -> Iterator[ServedProcess]:
    from refinery.loadtest.process import free_port, served

    port = free_port()
    argv = [sys.executable, str(PEER_SERVER), "--model", str(model_dir), "--port", str(port)]
    with served(argv, QUIET_ENV, f"http://127.0.0.1:{port}", READY_TIMEOUT_S, work / "peer.log") as server:
        yield server


def packaged_config(model_dir: Path, work: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """configs/demo.yaml with its state (Bento store, BentoML home, inference log) under ``work``, and
    ``overrides`` (``--set``, e.g. serving.max_batch_size=16) on top."""
    from refinery.loadtest.process import free_port

    return demo_config(
        [
            f"state_dir={work / 'state'}",
            f"model.base={model_dir}",
            "serving.host=127.0.0.1",
            f"serving.port={free_port()}",
            *overrides,
        ]
    )


@contextmanager
def refinery_server(cfg: RunConfig, model: Model, work: Path, data: Path) -> Iterator[ServedProcess]:
    """The model packaged as the package step packages it (for ``packaging.runtime: onnx-int8``, the int8
    export checked against fp32 on ``data``, as the test split, first) and served by `bentoml serve`."""
    import pandas as pd

    from refinery.loadtest.process import served
    from refinery.packaging.bento import fetch, package
    from refinery.packaging.runtime import choose_runtime
    from refinery.serving import serve_command

    runtime = cfg.packaging.runtime
    step(f"refinery: packaging the model as a Bento ({runtime}; state in {work / 'state'})")
    dataset = work / f"dataset-{runtime}"
    dataset.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(data, dtype={"text": str}, keep_default_na=False)
    frame["label"] = [cfg.data.labels[int(v)] for v in frame["label"]]  # SST-2: 0 negative, 1 positive
    frame[["text", "label"]].to_parquet(dataset / "test.parquet")
    choice = choose_runtime(cfg, model.path, dataset, work / f"runtime-{runtime}")
    if choice.agreement is not None:
        a = choice.agreement
        step(
            f"refinery: int8 vs fp32 on {a.rows} texts: agreement {a.agreement:.4f}, macro-F1"
            f" {a.reference_macro_f1:.4f} -> {a.candidate_macro_f1:.4f}; {choice.tags()['serving.onnx.verdict']}"
        )
    bento = package(cfg, choice.model_dir, model.version, runtime=choice.runtime)
    tag = fetch(bento, Path(str(cfg.packaging.bentoml_home)))
    argv, env = serve_command(cfg, tag)
    step(f"refinery: starting bentoml serve {tag}")
    base_url = f"http://{cfg.serving.host}:{cfg.serving.port}"
    log_path = work / "refinery-serve.log"
    with served(argv, {**QUIET_ENV, **env}, base_url, READY_TIMEOUT_S, log_path, cwd=work) as server:
        yield server


def run_arm(name: str, start: Callable[[], Any], load: Load) -> Arm:
    """Start a server arm, run every level against it, stop it; a failure is recorded, not raised."""
    from refinery.errors import RefineryError

    arm = Arm(name)
    step(f"{name}: starting (load average {os.getloadavg()[0]:.2f})")
    try:
        with start() as server:
            step(f"{name}: ready, RSS {server.rss_bytes() / 2**20:.0f} MiB")
            run_levels(arm, f"{server.base_url}/classify", load)
    except (RefineryError, RuntimeError) as exc:
        arm.failure = str(exc)
        step(f"{name}: FAILED: {exc}")
    return arm


# -- the report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    what: str
    value: str
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "MISSED", None: "NOT MEASURED"}[self.met]


def print_arm(arm: Arm, title: str) -> None:
    print(f"\n== {arm.name}: {title}")
    if arm.failure:
        print(f"failed: {arm.failure}")
    if not arm.levels:
        return
    print(
        f"{'concurrency':>11} {'sent':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    for concurrency, r in arm.levels.items():
        print(
            f"{concurrency:>11} {r.sent:>6} {r.throughput_per_s:>8.1f} {r.p50_ms:>8.1f} {r.p95_ms:>8.1f}"
            f" {r.p99_ms:>8.1f} {r.errors:>7}"
        )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def shown(value: float | None, unit: str = "x") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def targets(limit: Limit | None, peer: Arm | None, ours: Arm | None) -> tuple[dict[str, Any], list[Target]]:
    """The ratios and the four targets (a missing figure makes its target NOT MEASURED)."""
    ours_at = ours.at(AT) if ours else None
    peer_at = peer.at(AT) if peer else None
    ours_one = ours.at(1) if ours else None
    peer_one = peer.at(1) if peer else None
    ours_tput = ours_at.throughput_per_s if ours_at else None
    ratios = {
        f"refinery_over_limit_throughput_at_{AT}": ratio(ours_tput, limit.best if limit else None),
        f"refinery_over_peer_throughput_at_{AT}": ratio(
            ours_tput, peer_at.throughput_per_s if peer_at else None
        ),
        "refinery_over_peer_p50_at_1": ratio(
            ours_one.p50_ms if ours_one else None, peer_one.p50_ms if peer_one else None
        ),
    }
    over_limit = ratios[f"refinery_over_limit_throughput_at_{AT}"]
    over_peer = ratios[f"refinery_over_peer_throughput_at_{AT}"]
    p50_ratio = ratios["refinery_over_peer_p50_at_1"]
    p99 = ours_at.p99_ms if ours_at else None
    found = [
        Target(
            f"refinery >= {LIMIT_SHARE:.0%} of the limit at concurrency {AT}",
            shown(over_limit),
            None if over_limit is None else over_limit >= LIMIT_SHARE,
        ),
        Target(
            f"refinery >= {PEER_RATIO:g}x the peer at concurrency {AT}",
            shown(over_peer),
            None if over_peer is None else over_peer >= PEER_RATIO,
        ),
        Target(
            f"refinery p99 <= {P99_MS:g} ms at concurrency {AT}",
            shown(p99, " ms"),
            None if p99 is None else p99 <= P99_MS,
        ),
        Target(
            f"refinery p50 at concurrency 1 within {P50_SLACK:.0%} of the peer's",
            shown(p50_ratio),
            None if p50_ratio is None else p50_ratio <= 1 + P50_SLACK,
        ),
    ]
    return ratios, found


def print_targets(found: Sequence[Target]) -> None:
    print("\ntargets:")
    for target in found:
        print(f"  {target.verdict:<12} {target.what} ({target.value})")


def machine() -> dict[str, Any]:
    return {
        "cpus": available_cpus(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg()[0],
    }


def write_figures(path: Path | None, figures: dict[str, Any]) -> None:
    if path is None:
        return
    from refinery.results import write_json

    write_json(figures, path)
    step(f"figures written to {path}")


# -- the two modes -------------------------------------------------------------------------------------


def compare(args: argparse.Namespace, model: Model, load: Load, work: Path) -> int:
    limit: Limit | None = None
    arms: dict[str, Arm] = {}
    cfg = packaged_config(model.path, work, args.set)
    if "limit" in args.arms:
        step(f"limit: predict_proba over {len(load.bodies)} texts, batch sizes {list(BATCH_SIZES)}")
        limit = measure_limit(model.path, cfg.model.max_length, args.data, work)
    if "peer" in args.arms:
        arms["peer"] = run_arm("peer", lambda: peer_server(model.path, work), load)
    if "refinery" in args.arms:
        arms["refinery"] = run_arm("refinery", lambda: refinery_server(cfg, model, work, args.data), load)
    if "refinery-int8" in args.arms:
        int8 = cfg.model_copy(update={"packaging": cfg.packaging.model_copy(update={"runtime": "onnx-int8"})})
        arms["refinery-int8"] = run_arm(
            "refinery-int8", lambda: refinery_server(int8, model, work, args.data), load
        )

    if limit is not None:
        print(
            f"\n== limit: in-process predict_proba, {limit.threads} torch threads, {len(load.bodies)} texts"
        )
        print(f"{'batch':>5} {'texts/s':>8}")
        for batch, rate in limit.texts_per_s.items():
            print(f"{batch:>5} {rate:>8.1f}")
        print(f"best: {limit.best:.1f} texts/s (batch {limit.best_batch})")
    titles = {
        "peer": "FastAPI + transformers.pipeline per request, uvicorn, 1 worker",
        "refinery": "the packaged Bento (bentoml serve), inference log on (sqlite)",
        "refinery-int8": "the same with packaging.runtime onnx-int8 (ONNX Runtime, int8 weights)",
    }
    for name, arm in arms.items():
        print_arm(arm, titles[name])
    if "refinery-int8" in arms:
        int8_ratios, int8_found = targets(limit, arms.get("peer"), arms["refinery-int8"])
        print("\nrefinery-int8:")
        print_targets(int8_found)
    ratios, found = targets(limit, arms.get("peer"), arms.get("refinery"))
    print("\nrefinery (torch fp32, the default runtime):")
    print(
        f"refinery/limit throughput at concurrency {AT}: {shown(ratios[f'refinery_over_limit_throughput_at_{AT}'])}"
    )
    print(
        f"refinery/peer throughput at concurrency {AT}: {shown(ratios[f'refinery_over_peer_throughput_at_{AT}'])}"
    )
    print(f"refinery/peer p50 at concurrency 1: {shown(ratios['refinery_over_peer_p50_at_1'])}")
    print_targets(found)
    write_figures(
        args.json,
        {
            "mode": "compare",
            "machine": machine(),
            "model": model.description,
            "max_length": cfg.model.max_length,
            "texts": len(load.bodies),
            "requests_per_level": load.requests,
            "warmup": load.warmup,
            "limit": None
            if limit is None
            else {
                "threads": limit.threads,
                "texts_per_s": {str(b): r for b, r in limit.texts_per_s.items()},
                "best_batch": limit.best_batch,
                "best_texts_per_s": limit.best,
            },
            **{
                name: {"failure": arm.failure, "levels": [r.to_dict() for r in arm.levels.values()]}
                for name, arm in arms.items()
            },
            "ratios": ratios,
            "targets": [{"what": t.what, "value": t.value, "verdict": t.verdict} for t in found],
            "int8_ratios": int8_ratios if "refinery-int8" in arms else None,
            "int8_targets": [{"what": t.what, "value": t.value, "verdict": t.verdict} for t in int8_found]
            if "refinery-int8" in arms
            else None,
        },
    )
    return 0 if all(t.met for t in found) else 1


class RssSampler:
    """The server tree's RSS every few seconds, in a thread, for the soak's peak."""

    def __init__(self, server: ServedProcess, every_s: float = RSS_SAMPLE_S) -> None:
        self.samples: list[int] = []
        self._server = server
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.samples.append(self._server.rss_bytes())


def soak(args: argparse.Namespace, model: Model, load: Load, work: Path) -> int:
    from refinery.loadtest.load import run_load
    from refinery.monitoring.inference_log import InferenceLog

    cfg = packaged_config(model.path, work, args.set)
    bound = max(load.levels)
    measured: LoadResult | None = None
    # Every 2xx answer this server gives, warm-up included: the service writes predictions to the
    # inference log off the request path, so rows are compared with answers only after it stopped.
    answered = 0
    with refinery_server(cfg, model, work, args.data) as server:
        url = f"{server.base_url}/classify"
        answered += check_answers(url, load).ok
        warm = max(load.warmup, AT)
        answered += run_load(url, load.bodies, AT, requests=warm, timeout_s=load.timeout_s).ok
        if args.rate is None:
            step(f"soak: refinery's throughput at concurrency {AT} ({load.requests} requests)")
            measured = run_load(url, load.bodies, AT, requests=load.requests, timeout_s=load.timeout_s)
            answered += measured.ok
            rate = SOAK_RATE_SHARE * measured.throughput_per_s
            step(f"soak: {measured.throughput_per_s:.1f} req/s, so {rate:.1f} req/s ({SOAK_RATE_SHARE:.0%})")
        else:
            rate = args.rate
        if rate <= 0:
            raise RuntimeError(f"no rate to soak at: refinery answered nothing 2xx ({measured})")
        rss_start = server.rss_bytes()
        step(
            f"soak: {rate:.1f} req/s for {args.soak:g} s, at most {bound} in flight;"
            f" RSS {rss_start / 2**20:.0f} MiB"
        )
        with RssSampler(server) as sampler:
            result = run_load(
                url, load.bodies, bound, duration_s=args.soak, rate_per_s=rate, timeout_s=load.timeout_s
            )
        answered += result.ok
        rss_end = server.rss_bytes()
    step("soak: server stopped; reading the inference log")
    rows = InferenceLog(str(cfg.serving.inference_log)).count()
    growth = (rss_end - rss_start) / rss_start if rss_start else float("nan")
    peak = max([rss_start, rss_end, *sampler.samples])

    print(
        f"\n== soak: refinery at {rate:.1f} req/s for {args.soak:g} s (open loop, at most {bound} in flight)"
    )
    if measured is not None:
        print(f"throughput at concurrency {AT} before: {measured.throughput_per_s:.1f} req/s")
    print(
        f"sent {result.sent}, 2xx {result.ok}, late starts {result.late}, {result.throughput_per_s:.1f} req/s"
    )
    print(f"status counts: {result.status_counts}; transport errors: {result.transport_errors}")
    for example in [*result.error_bodies[:3], *result.transport_error_examples[:3]]:
        print(f"  e.g. {example}")
    print(f"latency: p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms, p99 {result.p99_ms:.1f} ms")
    mib = 2**20
    print(
        f"RSS of the server tree: {rss_start / mib:.0f} MiB after warm-up, {rss_end / mib:.0f} MiB at the end"
        f" ({growth:+.1%}), peak sampled {peak / mib:.0f} MiB"
    )
    print(
        f"inference-log rows: {rows}; 2xx answers over the server's life (warm-up included): {answered},"
        f" {result.ok} of them in the soak"
    )
    found = [
        Target("no 5xx answers", str(result.server_errors), result.server_errors == 0),
        Target("no transport errors", str(result.transport_errors), result.transport_errors == 0),
        Target(f"p99 <= {P99_MS:g} ms", shown(result.p99_ms, " ms"), result.p99_ms <= P99_MS),
        Target(f"RSS growth < {RSS_GROWTH:.0%}", f"{growth:+.1%}", growth < RSS_GROWTH),
        Target("inference-log rows == 2xx answers", f"{rows} vs {answered}", rows == answered),
    ]
    print_targets(found)
    write_figures(
        args.json,
        {
            "mode": "soak",
            "machine": machine(),
            "model": model.description,
            "seconds": args.soak,
            "rate_per_s": rate,
            "throughput_before": None if measured is None else measured.to_dict(),
            "soak": result.to_dict(),
            "rss_bytes": {
                "start": rss_start,
                "end": rss_end,
                "peak_sampled": peak,
                "samples": sampler.samples,
            },
            "rss_growth": growth,
            "inference_log_rows": rows,
            "answered_2xx": answered,
            "targets": [{"what": t.what, "value": t.value, "verdict": t.verdict} for t in found],
        },
    )
    return 0 if all(t.met for t in found) else 1


def _levels(raw: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a comma-separated list of integers") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: give concurrencies of at least 1")
    return levels


def _arms(raw: str) -> tuple[str, ...]:
    arms = tuple(v.strip() for v in raw.split(",") if v.strip())
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(f"{raw!r}: arms are {', '.join(ARMS)}")
    return arms


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a save_pretrained folder (default: the demo champion)")
    parser.add_argument("--data", type=Path, default=DEV, help="an SST-2 CSV whose texts are sent")
    parser.add_argument("--concurrency", type=_levels, default=(1, 8, 32, 128), help="e.g. 1,8,32,128")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per level")
    parser.add_argument(
        "--warmup", type=int, default=50, help="warm-up requests per level (at least the level)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take")
    parser.add_argument(
        "--arms", type=_arms, default=ARMS, help="which of limit,peer,refinery,refinery-int8 to run"
    )
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="soak the refinery arm instead")
    parser.add_argument("--rate", type=float, help="the soak's rate, req/s (default: 80%% of measured)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="configuration override for the Bento"
    )
    parser.add_argument("--limit-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--requests must be at least 1, --warmup at least 0, --timeout positive")
    if args.soak is not None and args.soak <= 0:
        parser.error("--soak must be a positive number of seconds")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.limit_worker:
        limit_worker(args.model, args.max_length, args.threads, args.data, args.limit_worker)
        return 0
    os.environ.update(QUIET_ENV)
    with tempfile.TemporaryDirectory(prefix="refinery-bench-serve-") as tmp:
        work = Path(tmp)
        try:
            texts = read_texts(args.data)
            if args.model is not None:
                if not (args.model / "config.json").is_file():
                    raise MissingInput(f"{args.model} is not a save_pretrained folder (no config.json)")
                model = Model(args.model.resolve(), "1", str(args.model))
            else:
                step("model: the demo champion (configs/demo.yaml)")
                model = demo_champion(work / "champion")
        except MissingInput as exc:
            print(exc, file=sys.stderr)
            return 2
        step(f"model: {model.description} ({model.path}); {len(texts)} texts from {args.data}")
        load = Load(
            bodies=[json.dumps({"texts": t}).encode() for t in texts],
            levels=args.concurrency,
            requests=args.requests,
            warmup=args.warmup,
            timeout_s=args.timeout,
        )
        if args.soak is None:
            return compare(args, model, load, work)
        from refinery.errors import RefineryError

        try:
            return soak(args, model, load, work)
        except (RefineryError, RuntimeError) as exc:
            print(f"soak failed: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())

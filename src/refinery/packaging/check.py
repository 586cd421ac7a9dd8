"""The serving check before promotion: the packaged Bento started as production starts it, under load.

A model that scores well can still be a bad release: the Bento may not start (a missing package, a model
its runtime cannot load), may answer errors, or may be too slow on the nodes it will serve from. After
``package`` and before ``promote``, :func:`check_serving` fetches the Bento from the Bento store into a
scratch BentoML home (checking its SHA-256, as a serving pod does), serves it with the command
``refinery serve`` runs, warms it up, and sends ``gate.serving_check.requests`` single-text requests at
``gate.serving_check.concurrency`` (texts from the run's test split). Its own inference log is a scratch
sqlite file: the check's predictions never reach the production log or drift monitoring.

The gate rules ``gate.max.serving_p95_ms`` and ``gate.max.serving_errors`` judge the result; a Bento that
does not start fails the rule ``serving_check.start``. The pipeline promotes only when every rule holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from refinery.config import SERVING_METRICS, RunConfig
from refinery.errors import RefineryError
from refinery.packaging.bento import PackageResult
from refinery.results import Record, write_json

CHECK_FILE = "serving_check.json"


@dataclass(frozen=True)
class ServingRule(Record):
    """One rule of the serving check and how the Bento fared."""

    name: str
    passed: bool
    detail: str


def _nan_for_null(value: Any) -> Any:
    return math.nan if value is None else value


#: A latency: NaN when nothing was answered, written to JSON as null and read back as NaN.
Latency = Annotated[float, BeforeValidator(_nan_for_null)]


@dataclass(frozen=True)
class ServingCheckResult(Record):
    """What the serving check measured and decided.

    Attributes:
        bento_tag: The Bento checked.
        started: Whether it got ready.
        requests: Requests sent after the warm-up.
        concurrency: Requests in flight at once.
        p50_ms, p95_ms, p99_ms: Latency of the answered requests (NaN when none was answered).
        errors: Requests not answered 2xx, transport errors included.
        throughput_per_s: Answered requests a second.
        status_counts: Answers per HTTP status.
        error_examples: A few error bodies or messages, to say what went wrong.
        rules: Each rule and its outcome; all passed means the Bento may be promoted.
    """

    bento_tag: str
    started: bool
    requests: int = 0
    concurrency: int = 0
    p50_ms: Latency = math.nan
    p95_ms: Latency = math.nan
    p99_ms: Latency = math.nan
    errors: int = 0
    throughput_per_s: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)
    error_examples: tuple[str, ...] = ()
    rules: tuple[ServingRule, ...] = ()

    @property
    def passed(self) -> bool:
        """Every rule held."""
        return all(rule.passed for rule in self.rules)

    @property
    def failed_rules(self) -> tuple[str, ...]:
        """``name: detail`` of each rule that failed."""
        return tuple(f"{r.name}: {r.detail}" for r in self.rules if not r.passed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, with the verdict (``passed``); NaN latencies become null (JSON has no NaN)."""
        data = super().to_dict()
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            if isinstance(data[key], float) and math.isnan(data[key]):
                data[key] = None
        data["passed"] = self.passed
        return data

    def to_markdown(self) -> str:
        """The check as the run's Markdown report."""
        verdict = "PASSED: the Bento may be promoted" if self.passed else "FAILED: the Bento is not promoted"
        lines = [f"# Serving check of {self.bento_tag}", "", f"**{verdict}**", ""]
        if self.started:
            lines += [
                f"{self.requests} requests at concurrency {self.concurrency}: p50 {self.p50_ms:.1f} ms, p95"
                f" {self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, {self.errors} errors,"
                f" {self.throughput_per_s:.1f} requests/s.",
                "",
            ]
        lines += ["| rule | result | detail |", "|---|---|---|"]
        lines += [f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.detail} |" for r in self.rules]
        if self.error_examples:
            lines += ["", "Errors seen:", ""] + [f"- `{e}`" for e in self.error_examples]
        return "\n".join(lines) + "\n"

    def to_lines(self) -> list[str]:
        """The check in a few lines for the end-of-run summary."""
        head = f"serving check: {'passed' if self.passed else 'FAILED'}"
        if self.started:
            head += f" (p95 {self.p95_ms:.0f} ms, {self.errors} errors in {self.requests} requests)"
        return [head] + [f"  failed {rule}" for rule in self.failed_rules]


def judge(cfg: RunConfig, result: ServingCheckResult) -> ServingCheckResult:
    """``result`` with the rules of ``cfg.gate`` applied: the start, then each ``gate.max.serving_*``."""
    rules = [
        ServingRule(
            "serving_check.start",
            result.started,
            "the Bento got ready" if result.started else "the Bento did not start (see error examples)",
        )
    ]
    measured = {"serving_p95_ms": result.p95_ms, "serving_errors": float(result.errors)}
    for metric, ceiling in cfg.gate.max.items():
        if metric not in SERVING_METRICS:
            continue
        value = measured[metric]
        ok = result.started and not math.isnan(value) and value <= ceiling
        shown = "not measured" if not result.started or math.isnan(value) else f"{value:g}"
        rules.append(
            ServingRule(
                f"max.{metric}",
                ok,
                f"{metric} {shown} {'<=' if ok else 'exceeds'} gate.max.{metric}={ceiling:g}",
            )
        )
    return dataclasses.replace(result, rules=tuple(rules))


def check_serving(
    cfg: RunConfig, bento: PackageResult, texts: Sequence[str], work_dir: Path
) -> ServingCheckResult:
    """Serve ``bento`` as production does, load it, and judge it by the serving rules of ``cfg.gate``.

    Args:
        cfg: Resolved run configuration (``gate``, ``serving`` limits and batching, the Bento store).
        bento: The packaged Bento, as the package step stored it.
        texts: Texts to send, one per request, in turn (the run's test split).
        work_dir: Where the server's log is kept (a KFP artifact folder); the scratch home and inference
            log live in a temporary folder removed afterwards.

    Returns:
        The measurements and the rules, passed or not.

    Raises:
        RefineryError: There are no texts to send.
    """
    from refinery.loadtest.load import run_load
    from refinery.loadtest.process import ServerStartError, free_port, served
    from refinery.packaging.bento import fetch
    from refinery.serving import ServiceSettings, bentoml_serve_argv

    check = cfg.gate.serving_check
    usable = [t for t in texts if t.strip()][: check.requests]
    if not usable:
        raise RefineryError("the serving check has no texts to send: the test split is empty")
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refinery-serving-check-") as tmp:
        home = Path(tmp) / "bentoml"
        host, port = "127.0.0.1", free_port()
        scratch_log = cfg.serving.model_copy(
            update={"inference_log": f"sqlite:///{Path(tmp) / 'inference.db'}"}
        )
        settings = ServiceSettings.from_config(cfg.model_copy(update={"serving": scratch_log}))
        env = {"BENTOML_HOME": str(home), **settings.to_env()}
        bodies = [json.dumps({"texts": t[: cfg.serving.max_text_chars]}).encode() for t in usable]
        try:
            tag = fetch(bento, home)
            with served(
                bentoml_serve_argv(tag, host, port),
                env,
                f"http://{host}:{port}",
                check.ready_timeout_s,
                work_dir / "server.log",
                cwd=Path(tmp),
            ) as server:
                load = run_load(
                    f"{server.base_url}/classify",
                    bodies,
                    check.concurrency,
                    requests=check.requests,
                    warmup=check.warmup,
                    timeout_s=check.request_timeout_s,
                )
        except (ServerStartError, RefineryError) as exc:
            message = str(exc)
            shown = message if len(message) <= 2000 else f"{message[:400]} ... {message[-1600:]}"
            result = ServingCheckResult(bento.bento_tag, started=False, error_examples=(shown,))
            return _finish(cfg, result, work_dir)
    examples = [*load.error_bodies, *load.transport_error_examples][:5]
    result = ServingCheckResult(
        bento.bento_tag,
        started=True,
        requests=load.sent,
        concurrency=check.concurrency,
        p50_ms=load.p50_ms,
        p95_ms=load.p95_ms,
        p99_ms=load.p99_ms,
        errors=load.errors,
        throughput_per_s=load.throughput_per_s,
        status_counts={str(k): v for k, v in sorted(load.status_counts.items())},
        error_examples=tuple(str(e)[:500] for e in examples),
    )
    return _finish(cfg, result, work_dir)


def _finish(cfg: RunConfig, result: ServingCheckResult, work_dir: Path) -> ServingCheckResult:
    judged = judge(cfg, result)
    write_json(judged.to_dict(), work_dir / CHECK_FILE)
    return judged

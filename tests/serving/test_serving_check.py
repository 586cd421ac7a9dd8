"""The serving check before promotion: the packaged Bento served by a real `bentoml serve`, loaded, judged."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from tests.serving.serving_support import Packaged

from refinery.config import RunConfig
from refinery.packaging.bento import package
from refinery.packaging.check import CHECK_FILE, ServingCheckResult, check_serving

pytestmark = pytest.mark.slow

# Texts of this module alone: the other serving tests write to the same production inference log.
_RUN = uuid.uuid4().hex[:8]
TEXTS = [
    f"{t} ({_RUN})" for t in ("sturdy and quiet", "leaks everywhere", "does the job", "broke on day one")
]


def _with_gate(cfg: RunConfig, **max_rules: float) -> RunConfig:
    check = cfg.gate.serving_check.model_copy(update={"requests": 40, "concurrency": 4, "warmup": 4})
    gate = cfg.gate.model_copy(update={"max": max_rules, "serving_check": check})
    return cfg.model_copy(update={"gate": gate})


def test_a_healthy_bento_passes_and_the_verdict_is_recorded(packaged: Packaged, tmp_path: Path) -> None:
    cfg = _with_gate(packaged.cfg, serving_p95_ms=5000, serving_errors=0)
    result = check_serving(cfg, packaged.result, TEXTS, tmp_path)

    assert result.passed, result.to_markdown()
    assert result.started
    assert result.requests == 40
    assert result.errors == 0
    assert result.status_counts == {"200": 40}
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms < 5000
    assert [r.name for r in result.rules] == [
        "serving_check.start",
        "max.serving_p95_ms",
        "max.serving_errors",
    ]
    saved = ServingCheckResult.from_dict(json.loads((tmp_path / CHECK_FILE).read_text()))
    assert saved.passed and saved.p95_ms == pytest.approx(result.p95_ms)
    assert (tmp_path / "server.log").stat().st_size > 0
    # The check's own scratch inference log: nothing reached the production one.
    from refinery.monitoring.inference_log import InferenceLog

    production = set(InferenceLog(str(cfg.serving.inference_log)).recent(100_000)["text"])
    assert production.isdisjoint(TEXTS)


def test_a_bento_over_its_latency_budget_is_refused_naming_the_rule(
    packaged: Packaged, tmp_path: Path
) -> None:
    cfg = _with_gate(packaged.cfg, serving_p95_ms=0.001, serving_errors=0)
    result = check_serving(cfg, packaged.result, TEXTS, tmp_path)

    assert result.started
    assert not result.passed
    (failed,) = result.failed_rules
    assert failed.startswith("max.serving_p95_ms: serving_p95_ms ")
    assert "exceeds gate.max.serving_p95_ms=0.001" in failed
    assert "FAILED: the Bento is not promoted" in result.to_markdown()


def test_a_bento_that_cannot_start_is_refused(
    packaged: Packaged, tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a damaged upload: the service cannot load it
    bento = package(packaged.cfg, broken, "9")
    cfg = _with_gate(packaged.cfg, serving_errors=0)
    cfg = cfg.model_copy(
        update={
            "gate": cfg.gate.model_copy(
                update={"serving_check": cfg.gate.serving_check.model_copy(update={"ready_timeout_s": 15})}
            )
        }
    )

    result = check_serving(cfg, bento, TEXTS, tmp_path / "check")

    assert not result.started
    assert not result.passed
    assert result.failed_rules[0].startswith("serving_check.start: the Bento did not start")
    assert "max.serving_errors: serving_errors not measured" in result.failed_rules[1]
    (example,) = result.error_examples
    # BentoML restarts a worker whose startup failed, so the server never gets ready: the check waits
    # gate.serving_check.ready_timeout_s and shows the end of the server's log.
    assert "did not answer 200" in example, example
    assert "startup failed" in example, example

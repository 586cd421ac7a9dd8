"""Preemption: a fine-tuning process stopped by SIGTERM (checkpoint, then a retryable exit) or killed by
SIGKILL resumes from its last checkpoint when the step runs again with the same run key, and ends with
the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from refinery.training.checkpointing import last_checkpoint
from refinery.training.finetune import finetune
from refinery.training.records import TrainingResult

# The child slows each optimizer step down so that the signal lands mid-epoch, not after training ended.
CHILD = """
import json
import sys
import time
from pathlib import Path
import transformers
from refinery.config import step_config
from refinery.errors import TrainingPreempted
from refinery.training.finetune import finetune

step = transformers.Trainer.training_step
def slow_step(self, *args, **kwargs):
    time.sleep(0.15)
    return step(self, *args, **kwargs)
transformers.Trainer.training_step = slow_step

cfg = step_config(**json.loads(Path(sys.argv[1]).read_text()))
try:
    finetune(cfg, Path(sys.argv[2]), Path(sys.argv[3]), run_key="preempted-run")
except TrainingPreempted as exc:
    print(f"PREEMPTED: {exc}", flush=True)
    sys.exit(75)
"""

SETTINGS = [
    "training.epochs=3",
    "training.learning_rate=0.002",
    "training.batch_size=16",
    "training.early_stopping_patience=5",
    "training.checkpoint.every_steps=3",
    "model.max_length=32",
]


@pytest.fixture
def prepared(make_config: Callable[..., object], tmp_path: Path) -> tuple[object, Path]:
    from refinery.data.prepare import prepare_data

    cfg = make_config(SETTINGS)
    prepare_data(cfg, tmp_path / "data")
    return cfg, tmp_path / "data"


def _start(cfg: object, data: Path, out: Path, tmp_path: Path) -> subprocess.Popen[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.sections()))  # type: ignore[attr-defined]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config), str(data), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_checkpoint(root: Path, child: subprocess.Popen[str], at_least: int) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        latest = last_checkpoint(root)
        if latest is not None and int(latest.name.split("-")[1]) >= at_least:
            return latest
        assert child.poll() is None, child.communicate()[0]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step >= {at_least} under {root} within 120 s")


def _assert_same_result(resumed: TrainingResult, uninterrupted: TrainingResult) -> None:
    assert resumed.global_steps == uninterrupted.global_steps
    assert resumed.best_validation_macro_f1 == pytest.approx(uninterrupted.best_validation_macro_f1, abs=1e-6)
    assert resumed.validation_loss == pytest.approx(uninterrupted.validation_loss, abs=1e-4)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_stopped_run_resumes_from_its_last_checkpoint(
    prepared: tuple[object, Path], tmp_path: Path, how: str
) -> None:
    cfg, data = prepared
    root = Path(cfg.training.checkpoint.dir) / "preempted-run"  # type: ignore[attr-defined]
    out = tmp_path / "model"
    child = _start(cfg, data, out, tmp_path)
    reached = _wait_for_checkpoint(root, child, at_least=6)
    child.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    output = child.communicate(timeout=120)[0]
    if how == "sigterm":
        # The step saved where it was and exited non-zero: the pipeline's retry policy runs it again.
        assert child.returncode == 75, output
        assert "PREEMPTED: " in output and "re-run" in output
        stopped = last_checkpoint(root)
        assert stopped is not None and int(stopped.name.split("-")[1]) >= int(reached.name.split("-")[1])
    else:
        assert child.returncode == -signal.SIGKILL
        stopped = last_checkpoint(root)
    assert not out.exists(), "no model is published by an interrupted run"
    stopped_at = int(stopped.name.split("-")[1])

    resumed = finetune(cfg, data, out, run_key="preempted-run")  # type: ignore[arg-type]
    assert resumed.resumed_from_step == stopped_at
    assert not root.exists(), "a finished run's checkpoints are removed"

    uninterrupted = finetune(cfg, data, tmp_path / "reference", run_key="reference-run")  # type: ignore[arg-type]
    assert uninterrupted.resumed_from_step is None
    _assert_same_result(resumed, uninterrupted)
    weights = (out / "model.safetensors").read_bytes()
    assert len(weights) == len((tmp_path / "reference" / "model.safetensors").read_bytes())
    assert json.loads((out / "training.json").read_text())["resumed_from_step"] == stopped_at


def test_a_run_stopped_during_its_refit_resumes_the_refit_only(
    make_config: Callable[..., object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refinery.data.prepare import prepare_data

    cfg = make_config([*SETTINGS, "training.epochs=2", "training.refit=true"])
    data = tmp_path / "data"
    prepare_data(cfg, data)
    root = Path(cfg.training.checkpoint.dir) / "preempted-run"  # type: ignore[attr-defined]
    out = tmp_path / "model"
    child = _start(cfg, data, out, tmp_path)
    reached = _wait_for_checkpoint(root / "refit", child, at_least=3)
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 75, output
    assert (root / "fit.json").is_file(), "the finished validation fit is recorded"
    stopped = last_checkpoint(root / "refit")
    assert stopped is not None and int(stopped.name.split("-")[1]) >= int(reached.name.split("-")[1])
    assert not out.exists()

    capsys.readouterr()
    resumed = finetune(cfg, data, out, run_key="preempted-run")  # type: ignore[arg-type]
    assert "validation fit done" in capsys.readouterr().out, "the validation fit is not run again"
    assert resumed.resumed_from_step is None
    assert resumed.refit is not None
    assert resumed.refit.resumed_from_step == int(stopped.name.split("-")[1])
    assert not root.exists()

    uninterrupted = finetune(cfg, data, tmp_path / "reference", run_key="reference-run")  # type: ignore[arg-type]
    assert uninterrupted.refit is not None and uninterrupted.refit.resumed_from_step is None
    # The validation fit was not repeated: its record is the first attempt's, equal to the reference's.
    assert resumed.history == uninterrupted.history
    assert resumed.refit.global_steps == uninterrupted.refit.global_steps
    assert resumed.refit.epochs == uninterrupted.refit.epochs
    a = load_file(out / "model.safetensors")
    b = load_file(tmp_path / "reference" / "model.safetensors")
    assert max(float(abs(a[k] - b[k]).max()) for k in a) < 1e-4

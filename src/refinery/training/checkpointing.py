"""Preemption-safe training: periodic checkpoints, the best weights kept apart, and a clean stop on SIGTERM.

Every run of the finetune step has a *run key*: on a cluster the pipeline run and task, so a retried
task finds its own checkpoints; locally a hash of the configuration and the data, so running the same
step again after a crash resumes it. Checkpoints live under ``training.checkpoint.dir/<run key>/``:

- ``checkpoint-<step>/``: what the Hugging Face Trainer saves and resumes from (model, optimizer,
  scheduler, RNG states, the trainer state with the step reached, the early-stopping counter),
  every ``training.checkpoint.every_steps`` steps or at the end of every epoch,
- ``best/``: the weights of the best evaluation so far (:class:`KeepBestWeights`), written whole or not
  at all (:func:`refinery.atomic.staged_dir`); training ends by loading them, whatever the save schedule
  was.

On SIGTERM (:class:`StopOnSignal`) the current step finishes, a checkpoint is written and training
stops; the step then raises :class:`~refinery.errors.TrainingPreempted`. A SIGKILL loses at most the
steps since the last checkpoint. The run's folder is removed once the model is saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback

from refinery.atomic import staged_dir

BEST = "best"
WEIGHTS = "weights.safetensors"


def local_run_key(config_digest: str, data_sha256: str) -> str:
    """The run key of a local run: the same configuration on the same data resumes the same run."""
    return "local-" + hashlib.sha256(f"{config_digest}:{data_sha256}".encode()).hexdigest()[:16]


def last_checkpoint(root: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder under ``root`` (``None`` when there is none).

    A checkpoint is complete once the Trainer wrote its ``trainer_state.json`` (written last).
    """
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    steps = [(int(p.name.split("-")[1]), p) for p in done if p.name.split("-")[1].isdigit()]
    return max(steps)[1] if steps else None


class KeepBestWeights(TrainerCallback):  # type: ignore[misc]
    """After each evaluation that beats the best so far, save the model's weights to ``<root>/best``.

    The comparison uses the Trainer's own record of the best metric (``state.best_metric``, saved in
    every checkpoint), which the Trainer updates only after the callbacks ran: it still holds the
    previous best here.
    """

    def __init__(self, root: Path, metric: str) -> None:
        self.root = Path(root)
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        value = (kwargs.get("metrics") or {}).get(self.metric)
        if value is None or not state.is_world_process_zero:
            return
        if state.best_metric is not None and value <= state.best_metric:
            return
        from safetensors.torch import save_model

        with staged_dir(self.root / BEST) as staging:
            # The whole state dict, whatever the model (adapters, frozen layers): loaded back as it is.
            save_model(kwargs["model"], str(staging / WEIGHTS))
            (staging / "best.json").write_text(
                json.dumps({"step": state.global_step, "epoch": state.epoch, self.metric: value})
            )


class StopOnSignal(TrainerCallback):  # type: ignore[misc]
    """Turn SIGTERM into "save a checkpoint after this step, then stop".

    Use as a context manager around ``trainer.train()``: it installs the handler on entry and puts the
    previous one back on exit. ``received`` says whether training stopped because of the signal.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> StopOnSignal:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control


def load_best_weights(model: Any, root: Path) -> bool:
    """Load the weights :class:`KeepBestWeights` kept into ``model``; False when there are none (no
    evaluation ran)."""
    from safetensors.torch import load_model

    best = Path(root) / BEST / WEIGHTS
    if not best.is_file():
        return False
    load_model(model, str(best))
    return True


def remove_run(root: Path) -> None:
    """Delete a finished run's checkpoints (a completed step never resumes)."""
    shutil.rmtree(root, ignore_errors=True)

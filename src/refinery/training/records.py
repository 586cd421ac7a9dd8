"""What a fine-tuning run did: :class:`TrainingResult`, written as ``training.json`` next to the model.

With ``training.refit`` the result also holds a :class:`Refit`: the fresh model trained on the train and
validation rows together, which is the one saved. Both are :class:`~refinery.results.Record` dataclasses,
so they go to JSON and back with no code of their own; :func:`epoch_history` turns the Hugging Face
Trainer's log into the result's per-epoch rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.errors import TrainingError
from refinery.results import Record, load_result
from refinery.training.techniques import AppliedTechniques

TRAINING_JSON = "training.json"


def samples_per_second(epochs: float, rows: int, seconds: float) -> float:
    """Rows x epochs actually run over the seconds (the Trainer's own figure assumes every planned
    epoch ran)."""
    return round(epochs * rows / max(seconds, 1e-9), 2)


@dataclass(frozen=True)
class Refit(Record):
    """What the refit did (``training.refit``): a fresh model trained on the train and validation rows
    together for the validation fit's best number of epochs. The model saved is this one."""

    epochs: float
    global_steps: int
    train_samples: int
    train_loss: float
    train_seconds: float
    train_samples_per_second: float
    resumed_from_step: int | None = None

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow and KFP Metrics."""
        return {
            "epochs": self.epochs,
            "global_steps": float(self.global_steps),
            "train_samples": float(self.train_samples),
            "train_loss": self.train_loss,
            "train_seconds": self.train_seconds,
            "train_samples_per_second": self.train_samples_per_second,
        }


@dataclass(frozen=True)
class TrainingResult(Record):
    """What a fine-tuning run did; written as ``training.json`` next to the model."""

    base_model: str
    labels: tuple[str, ...]
    max_length: int
    epochs_run: float
    global_steps: int
    stopped_early: bool
    best_validation_macro_f1: float
    validation_accuracy: float
    validation_loss: float
    train_loss: float
    train_seconds: float
    train_samples: int
    validation_samples: int
    train_samples_per_second: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    # The loss weight per label when the training loss was class-weighted; None when it was not.
    class_weights: dict[str, float] | None = None
    # The MLflow run that recorded this training (registry.tracking_uri, registry.experiment).
    mlflow_run_id: str | None = None
    # What was applied beyond plain full fine-tuning; None in results written before it was recorded.
    techniques: AppliedTechniques | None = None
    # The checkpoint step this training resumed from after a preemption; None when it started afresh.
    resumed_from_step: int | None = None
    # Data-parallel processes (DDP) that trained it.
    processes: int = 1
    # The refit on train + validation (training.refit) whose model was saved; None without one. The
    # fields above are the validation fit's: its validation scores are the last measured on rows the
    # saved model did not train on.
    refit: Refit | None = None

    @classmethod
    def from_json(cls, path: str | Path) -> TrainingResult:
        """Read ``training.json`` (or the model directory holding it).

        Raises:
            TrainingError: The file is missing or is not a training result.
        """
        return load_result(
            cls.from_dict, path, default_name=TRAINING_JSON, what="training result", error=TrainingError
        )

    @property
    def class_weighted(self) -> bool:
        """Whether the training loss was class-weighted."""
        return self.class_weights is not None

    def best_epoch(self) -> float:
        """The epoch of the best validation macro-F1 (the first if tied); the epochs run when no
        evaluation was recorded."""
        if not self.history:
            return self.epochs_run
        return max(self.history, key=lambda row: row["validation_macro_f1"])["epoch"]

    def metrics(self) -> dict[str, float]:
        """Headline numbers, flat, for the step's KFP Metrics."""
        applied = {}
        if self.techniques is not None:
            applied = {
                "trainable_parameters": float(self.techniques.trainable_parameters),
                "trainable_share": self.techniques.trainable_share,
            }
        return {
            "validation_macro_f1": self.best_validation_macro_f1,
            "validation_accuracy": self.validation_accuracy,
            "validation_loss": self.validation_loss,
            "train_loss": self.train_loss,
            "epochs_run": self.epochs_run,
            "global_steps": float(self.global_steps),
            "train_samples": float(self.train_samples),
            "train_seconds": self.train_seconds,
            "train_samples_per_second": self.train_samples_per_second,
            "class_weighted": float(self.class_weighted),
            **applied,
            **({f"refit_{k}": v for k, v in self.refit.metrics().items()} if self.refit else {}),
        }


def epoch_history(
    log_history: list[dict[str, Any]], unfrozen_layers: dict[int, int] | None = None
) -> list[dict[str, float]]:
    """Per-epoch rows from the Trainer's ``state.log_history``: the epoch's training loss and learning
    rate (when logged), its validation metrics, and under gradual unfreezing how many encoder layers
    trained in it."""
    train_logs = {round(e["epoch"], 4): e for e in log_history if "loss" in e and "epoch" in e}
    rows = []
    for entry in log_history:
        if "eval_macro_f1" not in entry:
            continue
        epoch = float(entry.get("epoch", 0.0))
        row = {"epoch": epoch, "step": float(entry.get("step", 0))}
        logged = train_logs.get(round(epoch, 4), {})
        if "loss" in logged:
            row["train_loss"] = float(logged["loss"])
        if "learning_rate" in logged:
            row["learning_rate"] = float(logged["learning_rate"])
        row.update(
            validation_loss=float(entry["eval_loss"]),
            validation_macro_f1=float(entry["eval_macro_f1"]),
            validation_accuracy=float(entry["eval_accuracy"]),
        )
        if unfrozen_layers is not None:
            # The epoch a (possibly partial) epoch's evaluation closes, 1-based.
            row["unfrozen_layers"] = float(unfrozen_layers.get(math.ceil(epoch - 1e-6), 0))
        rows.append(row)
    return rows

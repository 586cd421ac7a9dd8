"""Fine-tuning a pre-trained transformer as a text classifier with the Hugging Face Trainer.

This module orchestrates; the techniques ``training`` configures live in
:mod:`refinery.training.techniques` and the MLflow run in :mod:`refinery.training.tracking`.

When the prepared data records ``class_weights`` (``data.prepare.balance: class_weights``), the training
loss is a class-weighted cross-entropy; ``training.label_smoothing`` smooths it (weighted or not). The
validation loss stays the plain cross-entropy, so it compares across runs with and without weights or
smoothing. The model is evaluated on the validation split after every epoch; training stops early once
validation macro-F1 has not improved for ``training.early_stopping_patience`` epochs, and the best
epoch's weights are the ones saved; with ``training.refit``, a fresh model then trains on the train and
validation rows together for the best epoch count, and that one is saved instead (:class:`Refit`). The
output directory appears only when everything is written:
the model is assembled in a temporary sibling directory and renamed into place.

Every training is one MLflow run in the registry's experiment (parameters, per-epoch curves, final
metrics); its id is recorded in ``training.json`` with the techniques applied. A LoRA run saves the
adapters merged into a plain model (``training.lora.merge``, the default) or the adapter alone, beside
the base model it applies to (see :func:`refinery.training.techniques.save_lora`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from refinery.errors import TrainingError, TrainingPreempted
from refinery.modeling import effective_max_length
from refinery.pooling import PoolingError, resolve_pooling, saved_pooling, use_pooling
from refinery.results import read_json, write_json
from refinery.training.base_model import resolve_base
from refinery.training.techniques import AppliedTechniques

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refinery.config import RunConfig, TrainingConfig
    from refinery.training.techniques import DeviceSettings, EncoderParts
    from refinery.training.tracking import TrainingRun

logger = logging.getLogger(__name__)

TRAINING_JSON = "training.json"
PREPARED_JSON = "prepared.json"
# Under a refit run's checkpoint folder: the validation fit's result once it is done, and the refit's
# own checkpoints.
FIT_JSON = "fit.json"
REFIT = "refit"


def _samples_per_second(epochs: float, rows: int, seconds: float) -> float:
    """Rows x epochs actually run over the seconds (the Trainer's own figure assumes every planned
    epoch ran)."""
    return round(epochs * rows / max(seconds, 1e-9), 2)


@dataclass(frozen=True)
class Refit:
    """What the refit did (``training.refit``): a fresh model trained on the train and validation rows
    together for the validation fit's best number of epochs. The model saved is this one."""

    epochs: float
    global_steps: int
    train_samples: int
    train_loss: float
    train_seconds: float
    train_samples_per_second: float
    resumed_from_step: int | None = None

    @classmethod
    def of(cls, trained: _Trained, epochs: float, samples: int) -> Refit:
        """The record of ``trained``, the refit's training of ``samples`` rows for ``epochs``."""
        ran = float(trained.trainer.state.epoch or 0.0)
        return cls(
            epochs=round(epochs, 4),
            global_steps=int(trained.trainer.state.global_step),
            train_samples=samples,
            train_loss=float(trained.train_output.training_loss),
            train_seconds=round(trained.train_seconds, 3),
            train_samples_per_second=_samples_per_second(ran, samples, trained.train_seconds),
            resumed_from_step=trained.resumed_from_step,
        )

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
class TrainingResult:
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        return d

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

    def write_json(self, path: str | Path) -> Path:
        """Write the result as indented JSON, atomically."""
        return write_json(self.to_dict(), path)

    @classmethod
    def read_json(cls, path: str | Path) -> TrainingResult:
        """Read a ``training.json`` written by :meth:`write_json`."""
        d = read_json(path)
        d["labels"] = tuple(d["labels"])
        if d.get("techniques") is not None:
            d["techniques"] = AppliedTechniques.from_dict(d["techniques"])
        if d.get("refit") is not None:
            d["refit"] = Refit(**d["refit"])
        return cls(**d)


def progress_lines(every_fraction: float = 0.1) -> Any:
    """A Trainer callback printing a status line about every 10% of the steps (with an ETA) and each
    epoch's validation scores.

    For output that is not a terminal (a pipeline step's log), where a redrawn progress bar turns into
    hundreds of lines.
    """
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._started = 0.0
            self._next = 0
            self._done = False

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._done = True

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._started = time.perf_counter()
            self._next = max(1, int(state.max_steps * every_fraction))
            print(f"training: {state.max_steps} steps, {args.num_train_epochs:g} epochs", flush=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step, total = state.global_step, state.max_steps
            if step < self._next and step != total:
                return
            self._next = step + max(1, int(total * every_fraction))
            elapsed = time.perf_counter() - self._started
            eta = elapsed / step * (total - step)
            print(
                f"  step {step}/{total} ({step / total:.0%}), epoch {state.epoch:.2f},"
                f" {elapsed:.0f} s elapsed, ETA {eta:.0f} s",
                flush=True,
            )

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
        ) -> None:
            if metrics and "eval_macro_f1" in metrics:
                what = "best epoch" if self._done else f"epoch {state.epoch:.0f}"
                print(
                    f"  {what}: validation macro-F1 {metrics['eval_macro_f1']:.4f},"
                    f" loss {metrics.get('eval_loss', float('nan')):.4f}",
                    flush=True,
                )

    return ProgressLines()


class _EncodedTexts:
    """Tokenised texts with their class indices, in the list-of-dicts shape the Trainer collates."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: Sequence[int]) -> None:
        self._encodings = encodings
        self._labels = list(labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {key: values[i] for key, values in self._encodings.items()}
        item["labels"] = self._labels[i]
        return item


def _read_split(data_dir: Path, split: str, labels: tuple[str, ...]) -> pd.DataFrame:
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        raise TrainingError(f"{split} split not found: {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise TrainingError(f"cannot read {split} split {path}: {exc}") from exc
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise TrainingError(
            f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise TrainingError(f"{split} split {path} has no rows")
    if frame["text"].isna().any():
        raise TrainingError(f"{path}: {int(frame['text'].isna().sum())} row(s) with no text")
    frame = frame.assign(text=frame["text"].astype(str), label=frame["label"].astype(str))
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise TrainingError(
            f"{path}: label(s) {', '.join(map(repr, unknown))} are not in data.labels {list(labels)}"
        )
    return frame


def _class_weights(data_dir: Path, labels: tuple[str, ...]) -> dict[str, float] | None:
    """The ``class_weights`` recorded in the prepared data's ``prepared.json``, in label order.

    ``None`` when there is no ``prepared.json`` or it records no weights.

    Raises:
        TrainingError: ``prepared.json`` is unreadable, or its weights do not match ``data.labels``.
    """
    path = data_dir / PREPARED_JSON
    if not path.is_file():
        return None
    try:
        weights = read_json(path).get("class_weights")
    except ValueError as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from None
    if weights is None:
        return None
    if not isinstance(weights, dict) or set(weights) != set(labels):
        raise TrainingError(
            f"{path}: class_weights must give one weight per label of data.labels {list(labels)}, "
            f"got {weights!r}"
        )
    out: dict[str, float] = {}
    for label in labels:
        value = weights[label]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise TrainingError(f"{path}: class_weights[{label!r}] must be a positive number, got {value!r}")
        out[label] = float(value)
    return out


def _macro_f1_metrics(num_labels: int) -> Any:
    from sklearn.metrics import accuracy_score, f1_score

    def compute(eval_pred: Any) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        predicted = np.asarray(logits).argmax(axis=-1)
        truth = np.asarray(eval_pred.label_ids)
        return {
            "macro_f1": float(
                f1_score(truth, predicted, average="macro", labels=list(range(num_labels)), zero_division=0)
            ),
            "accuracy": float(accuracy_score(truth, predicted)),
        }

    return compute


# Below this size a model's matrices are too small to split across threads: synchronising them costs
# more than it saves, and on a busy machine every step waits for a descheduled thread.
SMALL_MODEL_PARAMETERS = 5_000_000


def cpu_thread_count(num_parameters: int) -> int:
    """Intra-op threads for CPU training: all CPUs this process may run on, one for a tiny model."""
    if num_parameters < SMALL_MODEL_PARAMETERS:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, available)


@contextmanager
def _restore_torch_threads() -> Iterator[None]:
    """Put torch's intra-op thread count back as it was, whatever happened inside."""
    import torch

    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _history(
    log_history: list[dict[str, Any]], unfrozen_layers: dict[int, int] | None = None
) -> list[dict[str, float]]:
    """Per-epoch rows: the epoch's training loss and learning rate (when logged), its validation
    metrics, and under gradual unfreezing how many encoder layers trained in it."""
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


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``, replacing an existing ``out_dir`` only after the rename succeeds."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _load_model(
    base: Path, labels: tuple[str, ...], dropout: float | None, attn_implementation: str | None
) -> tuple[Any, Any, dict[str, float] | None]:
    """The tokenizer and a classifier for ``labels`` built from ``base`` (a new head when the base has
    another or none), with the dropout override applied to its config; and the dropout fields set.

    Raises:
        TrainingError: The base cannot be loaded, or its config has no dropout fields to override.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from refinery.training.techniques import override_dropout

    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        config = AutoConfig.from_pretrained(
            base,
            local_files_only=True,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type="single_label_classification",
        )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for a bad dir
        raise TrainingError(f"cannot load base model {base} (model.base): {exc}") from exc
    # Dropout modules are built from the config, so the override goes in before the model is.
    dropout_fields = override_dropout(config, dropout) if dropout is not None else None

    def load(**kwargs: Any) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(
            base,
            config=config,
            use_safetensors=True,
            local_files_only=True,
            # A base with another head (or none, e.g. a sentence-embedding BertModel) gets a new head
            # sized for our labels.
            ignore_mismatched_sizes=True,
            **kwargs,
        )

    try:
        if attn_implementation is None:
            return tokenizer, load(), dropout_fields
        try:
            return tokenizer, load(attn_implementation=attn_implementation), dropout_fields
        except ValueError as exc:
            if attn_implementation not in str(exc).lower():
                raise
            logger.warning("%s does not support %s attention; using its default", base, attn_implementation)
            return tokenizer, load(), dropout_fields
    except Exception as exc:  # as above, plus safetensors errors for corrupt weights
        raise TrainingError(f"cannot load base model {base} (model.base): {exc}") from exc


def _limit_updates(model: Any, tcfg: TrainingConfig) -> tuple[Any, EncoderParts | None]:
    """Freeze what ``training.freeze_*`` asks for, or wrap the model with LoRA adapters.

    Returns:
        The model to train (the peft model under LoRA) and its encoder parts; None for an architecture
        whose layers cannot be found, when no layer-wise technique needs them.

    Raises:
        TrainingError: A layer-wise technique is asked of a model whose layers cannot be found, or a
            technique does not fit the model (see :mod:`refinery.training.techniques`).
    """
    from refinery.training import techniques

    layer_wise = tcfg.freeze_embeddings or tcfg.freeze_layers > 0 or tcfg.gradual_unfreezing
    try:
        parts: EncoderParts | None = techniques.encoder_parts(model)
    except TrainingError:
        if layer_wise or tcfg.layer_lr_decay is not None:
            raise
        parts = None  # plain fine-tuning of an architecture laid out otherwise
    if parts is not None:
        techniques.freeze(parts, embeddings=tcfg.freeze_embeddings, lowest_layers=tcfg.freeze_layers)
    if tcfg.lora.enabled:
        model = techniques.add_lora(model, tcfg.lora)
    return model, parts


def _applied_techniques(
    model: Any,
    parts: EncoderParts | None,
    cfg: RunConfig,
    args: Any,
    settings: DeviceSettings,
    dropout: dict[str, float] | None,
    layer_learning_rates: dict[str, float] | None,
) -> AppliedTechniques:
    """The record of what training applied, read off the trained model's state."""
    from refinery.training.techniques import frozen_parts, lora_summary, parameter_counts, unwrap_model

    tcfg = cfg.training
    trainable, total = parameter_counts(model)
    frozen_embeddings, frozen_layers = frozen_parts(parts) if parts is not None else (False, ())
    return AppliedTechniques(
        trainable_parameters=trainable,
        total_parameters=total,
        trainable_share=round(trainable / max(total, 1), 6),
        encoder_layers=len(parts.layers) if parts is not None else None,
        frozen_embeddings=frozen_embeddings,
        frozen_layers=frozen_layers,
        gradual_unfreezing=tcfg.gradual_unfreezing,
        layer_learning_rates=layer_learning_rates if tcfg.layer_lr_decay is not None else None,
        label_smoothing=tcfg.label_smoothing,
        dropout=dropout,
        scheduler=str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        gradient_accumulation_steps=int(args.gradient_accumulation_steps),
        effective_batch_size=int(args.per_device_train_batch_size * args.gradient_accumulation_steps),
        precision=settings.precision,
        optimizer=str(getattr(args.optim, "value", args.optim)),
        attention=str(getattr(unwrap_model(model).config, "_attn_implementation", None) or "default"),
        pooling=saved_pooling(unwrap_model(model)),
        compiled=bool(args.torch_compile),
        lora=lora_summary(model, tcfg.lora) if tcfg.lora.enabled else None,
    )


def _run_folder(cfg: RunConfig, data_dir: Path, run_key: str | None) -> tuple[str, Path]:
    """The run key and its checkpoint folder under ``training.checkpoint.dir``."""
    import hashlib

    from refinery.training.checkpointing import local_run_key

    if not run_key:
        digest = hashlib.sha256()
        for split in ("train", "validation"):
            digest.update((data_dir / f"{split}.parquet").read_bytes())
        run_key = local_run_key(cfg.digest(), digest.hexdigest())
    folder = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_key)
    return run_key, Path(str(cfg.training.checkpoint.dir)) / folder


def _world() -> tuple[int, int]:
    """This process's rank and the number of processes (torchrun sets RANK and WORLD_SIZE)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class _Setup:
    """What every training within one :func:`finetune` call shares."""

    cfg: RunConfig
    base: Path
    labels: tuple[str, ...]
    settings: DeviceSettings
    world_size: int
    class_weights: dict[str, float] | None
    run_key: str


@dataclass(frozen=True)
class _Trained:
    """One training of a fresh model, as :func:`_train` leaves it."""

    setup: _Setup
    trainer: Any
    model: Any
    tokenizer: Any
    parts: EncoderParts | None
    dropout: dict[str, float] | None
    optimizer_groups: list[list[dict[str, Any]]]
    max_length: int
    train_output: Any
    train_seconds: float
    resumed_from_step: int | None
    early_stopping: Any
    unfreezing: Any
    run: TrainingRun | None

    def applied(self) -> AppliedTechniques:
        """The record of the techniques this training applied."""
        from refinery.training.techniques import group_learning_rates

        groups = self.optimizer_groups
        return _applied_techniques(
            self.model,
            self.parts,
            self.setup.cfg,
            self.trainer.args,
            self.setup.settings,
            self.dropout,
            group_learning_rates(groups[0]) if groups else None,
        )


def _train(
    setup: _Setup,
    root: Path,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    epochs: float,
    track: bool,
) -> _Trained:
    """Build a fresh classifier from the base and train it on ``train_df`` for ``epochs``, resuming from
    the last checkpoint under ``root``.

    With ``valid_df`` (the validation fit) it is evaluated after every epoch, stops early and keeps the
    best evaluation's weights in ``root``; without (the refit) it trains the epochs through. With
    ``track`` (and ``training.tracking``) the first process opens the MLflow run, with the per-epoch
    curves when there is validation.

    Raises:
        TrainingError: The base or a technique does not fit (see :func:`finetune`).
        TrainingPreempted: SIGTERM stopped training after it saved a checkpoint.
    """
    import torch
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
        TrainingArguments,
        set_seed,
    )

    from refinery.training import techniques
    from refinery.training.checkpointing import KeepBestWeights, StopOnSignal, last_checkpoint
    from refinery.training.tracking import TrainingRun, training_params

    cfg, tcfg, settings, labels = setup.cfg, setup.cfg.training, setup.settings, setup.labels
    use_cuda = torch.cuda.is_available()
    label2id = {label: i for i, label in enumerate(labels)}
    root.mkdir(parents=True, exist_ok=True)
    resume_from = last_checkpoint(root)

    # The classification head (and LoRA's adapters) are freshly initialised: seed before building.
    set_seed(tcfg.seed)
    tokenizer, model, dropout = _load_model(setup.base, labels, tcfg.dropout, settings.attn_implementation)
    try:
        model = use_pooling(model, resolve_pooling(cfg.model.pooling, setup.base, model))
    except PoolingError as exc:
        raise TrainingError(str(exc)) from exc
    if not use_cuda:
        torch.set_num_threads(cpu_thread_count(model.num_parameters()))
    max_length = effective_max_length(cfg.model.max_length, model.config, tokenizer)
    if max_length < cfg.model.max_length:
        logger.warning(
            "model.max_length %d exceeds what %s accepts; truncating to %d",
            cfg.model.max_length,
            setup.base,
            max_length,
        )

    model, parts = _limit_updates(model, tcfg)

    def encode(frame: pd.DataFrame) -> _EncodedTexts:
        encodings = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
        return _EncodedTexts(dict(encodings), [label2id[label] for label in frame["label"]])

    train_set = encode(train_df)
    valid_set = None
    if valid_df is not None:
        # Validation rows sorted by length: each evaluation batch pads to similar lengths, which makes
        # the per-epoch evaluation several times cheaper; metrics do not depend on the order.
        valid_set = encode(valid_df.loc[valid_df["text"].str.len().sort_values(kind="stable").index])
    evaluate = valid_set is not None
    # Left out on CPU: the Trainer's default optimizer, as before.
    optim: dict[str, Any] = {"optim": settings.optim} if settings.optim else {}
    every = tcfg.checkpoint.every_steps
    args = TrainingArguments(
        output_dir=str(root),
        num_train_epochs=float(epochs),
        # A smoke run's step limit applies to the validation fit; the refit follows its epochs.
        max_steps=tcfg.max_steps if tcfg.max_steps is not None and evaluate else -1,
        learning_rate=tcfg.learning_rate,
        # The global batch stays training.batch_size whatever the number of processes.
        per_device_train_batch_size=tcfg.batch_size // setup.world_size,
        per_device_eval_batch_size=tcfg.eval_batch_size,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        weight_decay=tcfg.weight_decay,
        lr_scheduler_type=tcfg.scheduler,
        # transformers 5 dropped warmup_ratio: a float below 1 is read as a ratio.
        warmup_steps=tcfg.warmup_ratio,
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        eval_strategy="epoch" if evaluate else "no",
        logging_strategy="epoch",
        # Full checkpoints (optimizer, scheduler, RNG, data position) to resume from; the best
        # weights are kept apart by KeepBestWeights, so the save schedule is free.
        save_strategy="steps" if every else "epoch",
        save_steps=every or 500,
        save_total_limit=tcfg.checkpoint.keep,
        load_best_model_at_end=False,
        restore_callback_states_from_checkpoint=True,
        metric_for_best_model="macro_f1" if evaluate else None,
        greater_is_better=True if evaluate else None,
        train_sampling_strategy="group_by_length",
        use_cpu=not use_cuda,
        bf16=settings.bf16,
        fp16=settings.fp16,
        torch_compile=settings.torch_compile,
        **optim,
        # Under DDP, layers frozen at the first epoch must not stall gradient reduction later.
        ddp_find_unused_parameters=True if tcfg.gradual_unfreezing else None,
        report_to=[],
        # A progress bar on a terminal; in a pipeline step (a pipe) one status line per ~10% instead.
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_num_workers=0,
    )
    stop = StopOnSignal()
    callbacks: list[Any] = [stop]
    early_stopping = None
    if evaluate:
        early_stopping = EarlyStoppingCallback(early_stopping_patience=tcfg.early_stopping_patience)
        callbacks = [early_stopping, KeepBestWeights(root, "macro_f1"), stop]
    unfreezing = techniques.gradual_unfreezing(parts) if parts and tcfg.gradual_unfreezing else None
    if unfreezing is not None:
        callbacks.append(unfreezing)
    optimizer_groups: list[list[dict[str, Any]]] = []
    trainer_class = techniques.trainer_class(
        class_weights=[setup.class_weights[x] for x in labels] if setup.class_weights is not None else None,
        label_smoothing=tcfg.label_smoothing,
        layer_lr_decay=tcfg.layer_lr_decay,
        parts=parts,
        on_optimizer=optimizer_groups.append,
    )
    run: TrainingRun | None = None
    if track and tcfg.tracking and args.process_index == 0:  # one run per training, by the first process
        run = TrainingRun.start(
            cfg,
            {
                **training_params(cfg),
                "precision": settings.precision,
                "optimizer": str(getattr(args.optim, "value", args.optim)),
                "class_weighted": str(setup.class_weights is not None),
                "pooling": saved_pooling(model),
            },
            {"base_model": str(setup.base), "config_sha": cfg.digest()},
        )
        if evaluate:
            callbacks.append(run.callback())
    try:
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=valid_set,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=_macro_f1_metrics(len(labels)) if evaluate else None,
            callbacks=callbacks,
        )
        if args.disable_tqdm:
            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(progress_lines())
        if resume_from is not None:
            print(f"resuming from {resume_from} (run key {setup.run_key})", flush=True)
        started = time.perf_counter()
        with stop:
            train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_seconds = time.perf_counter() - started
        if stop.received is not None:
            raise TrainingPreempted(
                f"training stopped by signal {stop.received} at step {trainer.state.global_step}; its "
                f"checkpoint is in {root}: re-run the step with run key {setup.run_key!r} to resume"
            )
    except BaseException:
        if run is not None:
            run.finish(succeeded=False)
        raise
    return _Trained(
        setup=setup,
        trainer=trainer,
        model=model,
        tokenizer=tokenizer,
        parts=parts,
        dropout=dropout,
        optimizer_groups=optimizer_groups,
        max_length=max_length,
        train_output=train_output,
        train_seconds=train_seconds,
        resumed_from_step=int(resume_from.name.split("-")[1]) if resume_from is not None else None,
        early_stopping=early_stopping,
        unfreezing=unfreezing,
        run=run,
    )


def finetune(cfg: RunConfig, data_dir: Path, out_dir: Path, run_key: str | None = None) -> TrainingResult:
    """Fine-tune ``cfg.model.base`` on the prepared splits and save the best epoch's model (or, with
    ``training.refit``, a fresh model trained on train + validation for the best epoch count).

    Applies the techniques of ``cfg.training`` (see :mod:`refinery.training.techniques`): gradient
    accumulation, the learning-rate schedule, label smoothing, a dropout override, frozen embeddings
    and lowest layers, gradual unfreezing, layer-wise learning-rate decay, LoRA; on CUDA, bf16 (else
    fp16) mixed precision, fused AdamW, SDPA attention and, when ``training.compile`` is set,
    torch.compile. Records the run in MLflow (``cfg.registry``).

    Args:
        cfg: The run configuration (``data.labels``, ``model``, ``training`` and ``registry`` sections
            are used).
        data_dir: A prepared dataset directory holding ``train.parquet`` and ``validation.parquet``
            (columns ``text`` and ``label``), and ``prepared.json`` whose ``class_weights``, when set,
            weight the training loss.
        out_dir: Where the model directory is created: ``model.safetensors``, ``config.json`` (with
            id2label/label2id from ``data.labels``), the tokenizer files and ``training.json``; for a
            LoRA run kept as an adapter, ``adapter_model.safetensors`` and ``adapter_config.json``
            instead of ``model.safetensors``.
        run_key: Names this run's checkpoints under ``training.checkpoint.dir`` (see
            :mod:`refinery.training.checkpointing`): the same key resumes from the last checkpoint. On
            a cluster the pipeline run and task; by default a hash of the configuration and the data.

    Returns:
        The :class:`TrainingResult` also written to ``out_dir/training.json``.

    Raises:
        TrainingError: The base model is missing or cannot be loaded, a split is missing, empty or
            unreadable, the data holds a label outside ``data.labels``, ``prepared.json``'s
            ``class_weights`` do not match ``data.labels``, or a technique does not fit the model (its
            encoder layers or dropout fields cannot be found, ``freeze_layers`` exceeds its layers,
            LoRA's target modules are missing). Nothing is left in ``out_dir`` (nor next to it) when
            this is raised.
        TrainingPreempted: SIGTERM stopped training after it saved a checkpoint; run the step again
            with the same run key to resume.
        RegistryError: The MLflow tracking back end (``registry.tracking_uri``) is unreachable.
    """
    labels = tuple(cfg.data.labels)
    tcfg = cfg.training
    rank, world_size = _world()
    if tcfg.batch_size % world_size:
        raise TrainingError(
            f"training.batch_size {tcfg.batch_size} does not split evenly over {world_size} processes"
            " (training.processes_per_node)"
        )
    base = resolve_base(cfg.model.base, str(cfg.model.cache_dir))
    data_dir = Path(data_dir)
    out_dir = Path(out_dir)
    train_df = _read_split(data_dir, "train", labels)
    valid_df = _read_split(data_dir, "validation", labels)
    class_weights = _class_weights(data_dir, labels)
    run_key, checkpoint_root = _run_folder(cfg, data_dir, run_key)

    import torch

    from refinery.training import techniques
    from refinery.training.checkpointing import load_best_weights, remove_run

    if not sys.stderr.isatty():
        # Weight loading and saving bars would print one line per redraw into a step's log.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    use_cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if use_cuda else "cpu"
    settings = techniques.device_settings(
        cuda=use_cuda,
        bf16_supported=torch.cuda.is_bf16_supported() if use_cuda else techniques.cpu_native_bf16(),
        compile_requested=tcfg.compile,
        precision=tcfg.precision,
    )
    setup = _Setup(cfg, base, labels, settings, world_size, class_weights, run_key)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    # A refit run records the validation fit's result here once it is done, so that a re-run after a
    # preemption during the refit resumes the refit instead of fitting again.
    fitted = checkpoint_root / FIT_JSON
    finished = False
    run: TrainingRun | None = None
    try:
        with _restore_torch_threads():
            if tcfg.refit and fitted.is_file():
                result = TrainingResult.read_json(fitted)
                print(f"validation fit done ({fitted}); resuming the refit", flush=True)
            else:
                fit = _train(setup, checkpoint_root, train_df, valid_df, float(tcfg.epochs), track=True)
                run, trainer = fit.run, fit.trainer
                if world_size > 1:
                    import torch.distributed as dist

                    dist.barrier()  # rank 0 has written the best weights before anyone loads them
                load_best_weights(trainer.model, checkpoint_root)
                # Read these before the final evaluate(), which adds a log entry and runs the callbacks.
                history = _history(
                    trainer.state.log_history,
                    fit.unfreezing.schedule if fit.unfreezing is not None else None,
                )
                stopped_early = (
                    fit.early_stopping.early_stopping_patience_counter >= tcfg.early_stopping_patience
                    and trainer.state.global_step < trainer.state.max_steps
                )
                # The best evaluation's weights are loaded now; score them once more for the record.
                final = trainer.evaluate()
                state = trainer.state
                # The Trainer's own samples/s assumes every planned epoch ran; count what did run.
                epochs_run = float(state.epoch or 0.0)
                result = TrainingResult(
                    base_model=str(base),
                    labels=labels,
                    max_length=fit.max_length,
                    epochs_run=round(epochs_run, 4),
                    global_steps=int(state.global_step),
                    stopped_early=stopped_early,
                    best_validation_macro_f1=float(final["eval_macro_f1"]),
                    validation_accuracy=float(final["eval_accuracy"]),
                    validation_loss=float(final["eval_loss"]),
                    train_loss=float(fit.train_output.training_loss),
                    train_seconds=round(fit.train_seconds, 3),
                    train_samples=len(train_df),
                    validation_samples=len(valid_df),
                    train_samples_per_second=_samples_per_second(
                        epochs_run, len(train_df), fit.train_seconds
                    ),
                    device=device,
                    history=history,
                    class_weights=class_weights,
                    mlflow_run_id=run.run_id if run is not None else None,
                    techniques=fit.applied(),
                    resumed_from_step=fit.resumed_from_step,
                    processes=world_size,
                )
                shipped = fit
                if tcfg.refit and rank == 0:
                    result.write_json(fitted)
            if tcfg.refit:
                epochs = result.best_epoch()
                print(
                    f"refit: a fresh model on the {len(train_df)} train and {len(valid_df)} validation rows"
                    f" for {epochs:g} epochs, the validation fit's best",
                    flush=True,
                )
                both = pd.concat([train_df, valid_df], ignore_index=True)
                shipped = _train(setup, checkpoint_root / REFIT, both, None, epochs, track=run is None)
                run = run or shipped.run
                refit = Refit.of(shipped, epochs, len(both))
                result = dataclasses.replace(
                    result,
                    refit=refit,
                    techniques=shipped.applied(),
                    mlflow_run_id=run.run_id if run is not None else result.mlflow_run_id,
                )
        if run is not None:
            run.log_metrics({f"final_{k}": v for k, v in result.metrics().items()}, step=result.global_steps)
        # Saved directly rather than with trainer.save_model, which adds a pickled training_args.bin.
        # The model holds the best evaluation's weights (or the refit's). Under DDP the first process
        # writes it.
        if rank == 0:
            if tcfg.lora.enabled:
                techniques.save_lora(shipped.model, staging, merge=tcfg.lora.merge)
            else:
                shipped.model.save_pretrained(staging)
            shipped.tokenizer.save_pretrained(staging)
            result.write_json(staging / TRAINING_JSON)
            _move_into_place(staging, out_dir)
        finished = True
    except BaseException:
        if run is not None:
            run.finish(succeeded=False)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        # Checkpoints outlive a preempted or failed run (the next attempt resumes); not a finished one.
        if finished and rank == 0:
            remove_run(checkpoint_root)
    if run is not None:
        run.finish(succeeded=True)
    logger.info(
        "fine-tuned %s for %.2f epochs (%d steps)%s: validation macro-F1 %.4f, saved to %s (MLflow run %s)",
        base,
        result.epochs_run,
        result.global_steps,
        f", then refit for {result.refit.epochs:g} epochs on train + validation" if result.refit else "",
        result.best_validation_macro_f1,
        out_dir,
        result.mlflow_run_id,
    )
    return result

"""One training of a fresh classifier with the Hugging Face Trainer, resumable from its checkpoints.

:func:`train` builds the classifier (:mod:`refinery.training.classifier`), tokenises the rows, sets up
the Trainer and runs it:

- its arguments (:func:`training_arguments`) come from ``training``: batch size split over the
  data-parallel processes, schedule, precision, the checkpoint schedule;
- its metric (:func:`validation_metrics`) is the project's macro-F1
  (:func:`refinery.evaluation.metrics.macro_f1`) and the accuracy, on the validation split;
- its callbacks stop early, keep the best evaluation's weights, turn SIGTERM into a checkpoint and a
  stop (:mod:`refinery.training.checkpointing`), unfreeze layers gradually, print progress lines
  (:mod:`refinery.training.progress`) and log the per-epoch curves to MLflow
  (:mod:`refinery.training.tracking`).

:mod:`refinery.training.finetune` calls it once for the validation fit and once more for a refit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refinery.errors import TrainingPreempted
from refinery.pooling import saved_pooling
from refinery.training.classifier import Classifier, build_classifier
from refinery.training.progress import progress_lines
from refinery.training.techniques import AppliedTechniques

if TYPE_CHECKING:
    import pandas as pd

    from refinery.config import RunConfig
    from refinery.training.techniques import DeviceSettings
    from refinery.training.tracking import TrainingRun


@dataclass(frozen=True)
class Setup:
    """What every training within one fine-tuning shares."""

    cfg: RunConfig
    base: Path
    labels: tuple[str, ...]
    settings: DeviceSettings
    world_size: int
    class_weights: dict[str, float] | None
    run_key: str


@dataclass(frozen=True)
class Trained:
    """One training of a fresh model, as :func:`train` leaves it."""

    setup: Setup
    trainer: Any
    classifier: Classifier
    optimizer_groups: list[list[dict[str, Any]]]
    train_output: Any
    train_seconds: float
    resumed_from_step: int | None
    early_stopping: Any
    unfreezing: Any
    run: TrainingRun | None

    @property
    def model(self) -> Any:
        """The trained model (the peft model under LoRA)."""
        return self.classifier.model

    def applied(self) -> AppliedTechniques:
        """The record of the techniques this training applied, read off the trained model's state."""
        from refinery.training.techniques import group_learning_rates

        groups = self.optimizer_groups
        return applied_techniques(
            self.classifier,
            self.setup,
            self.trainer.args,
            group_learning_rates(groups[0]) if groups else None,
        )


class EncodedTexts:
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


def validation_metrics(num_labels: int) -> Any:
    """The Trainer's ``compute_metrics``: macro-F1 over all ``num_labels`` classes, and accuracy."""
    from refinery.evaluation.metrics import macro_f1

    def compute(eval_pred: Any) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        predicted = np.asarray(logits).argmax(axis=-1)
        truth = np.asarray(eval_pred.label_ids)
        return {
            "macro_f1": macro_f1(truth, predicted, num_labels),
            "accuracy": float(np.mean(truth == predicted)),
        }

    return compute


def training_arguments(setup: Setup, root: Path, epochs: float, evaluate: bool) -> Any:
    """The Trainer's arguments for a training of ``epochs`` checkpointing under ``root``; evaluated
    after every epoch (and the best kept by macro-F1) when ``evaluate``."""
    import torch
    from transformers import TrainingArguments

    tcfg, settings = setup.cfg.training, setup.settings
    # Left out on CPU: the Trainer's default optimizer, as before.
    optim: dict[str, Any] = {"optim": settings.optim} if settings.optim else {}
    every = tcfg.checkpoint.every_steps
    return TrainingArguments(
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
        use_cpu=not torch.cuda.is_available(),
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


@dataclass
class _Callbacks:
    """The Trainer callbacks of one training, and those whose state the result reads afterwards."""

    stop: Any
    early_stopping: Any = None
    unfreezing: Any = None
    all: list[Any] = field(default_factory=list)


def _callbacks(setup: Setup, root: Path, classifier: Classifier, evaluate: bool) -> _Callbacks:
    """SIGTERM handling; with evaluation, early stopping and keeping the best weights; gradual unfreezing."""
    from transformers import EarlyStoppingCallback

    from refinery.training import techniques
    from refinery.training.checkpointing import KeepBestWeights, StopOnSignal

    tcfg = setup.cfg.training
    callbacks = _Callbacks(stop=StopOnSignal())
    callbacks.all = [callbacks.stop]
    if evaluate:
        callbacks.early_stopping = EarlyStoppingCallback(early_stopping_patience=tcfg.early_stopping_patience)
        callbacks.all = [callbacks.early_stopping, KeepBestWeights(root, "macro_f1"), callbacks.stop]
    if classifier.parts and tcfg.gradual_unfreezing:
        callbacks.unfreezing = techniques.gradual_unfreezing(classifier.parts)
        callbacks.all.append(callbacks.unfreezing)
    return callbacks


def _open_run(setup: Setup, args: Any, model: Any) -> TrainingRun:
    """Open the MLflow run of this training, with its parameters."""
    from refinery.training.tracking import TrainingRun, training_params

    cfg, settings = setup.cfg, setup.settings
    return TrainingRun.start(
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


def _encode(classifier: Classifier, labels: tuple[str, ...], frame: pd.DataFrame) -> EncodedTexts:
    label2id = {label: i for i, label in enumerate(labels)}
    encodings = classifier.tokenizer(list(frame["text"]), truncation=True, max_length=classifier.max_length)
    return EncodedTexts(dict(encodings), [label2id[label] for label in frame["label"]])


def _encode_validation(classifier: Classifier, labels: tuple[str, ...], frame: pd.DataFrame) -> EncodedTexts:
    # Validation rows sorted by length: each evaluation batch pads to similar lengths, which makes the
    # per-epoch evaluation several times cheaper; metrics do not depend on the order.
    return _encode(classifier, labels, frame.loc[frame["text"].str.len().sort_values(kind="stable").index])


def train(
    setup: Setup,
    root: Path,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    epochs: float,
    track: bool,
) -> Trained:
    """Build a fresh classifier from the base and train it on ``train_df`` for ``epochs``, resuming from
    the last checkpoint under ``root``.

    With ``valid_df`` (the validation fit) it is evaluated after every epoch, stops early and keeps the
    best evaluation's weights in ``root``; without (the refit) it trains the epochs through. With
    ``track`` (and ``training.tracking``) the first process opens the MLflow run, with the per-epoch
    curves when there is validation.

    Raises:
        TrainingError: The base or a technique does not fit (see
            :func:`refinery.training.finetune.finetune`).
        TrainingPreempted: SIGTERM stopped training after it saved a checkpoint.
    """
    from transformers import DataCollatorWithPadding, PrinterCallback

    from refinery.training import techniques
    from refinery.training.checkpointing import last_checkpoint

    tcfg, labels = setup.cfg.training, setup.labels
    root.mkdir(parents=True, exist_ok=True)
    resume_from = last_checkpoint(root)
    classifier = build_classifier(setup.cfg, setup.base, labels, setup.settings)
    train_set = _encode(classifier, labels, train_df)
    valid_set = _encode_validation(classifier, labels, valid_df) if valid_df is not None else None
    evaluate = valid_set is not None
    args = training_arguments(setup, root, epochs, evaluate)
    callbacks = _callbacks(setup, root, classifier, evaluate)
    optimizer_groups: list[list[dict[str, Any]]] = []
    trainer_class = techniques.trainer_class(
        class_weights=[setup.class_weights[x] for x in labels] if setup.class_weights is not None else None,
        label_smoothing=tcfg.label_smoothing,
        layer_lr_decay=tcfg.layer_lr_decay,
        parts=classifier.parts,
        on_optimizer=optimizer_groups.append,
    )
    run: TrainingRun | None = None
    if track and tcfg.tracking and args.process_index == 0:  # one run per training, by the first process
        run = _open_run(setup, args, classifier.model)
        if evaluate:
            callbacks.all.append(run.callback())
    try:
        trainer = trainer_class(
            model=classifier.model,
            args=args,
            train_dataset=train_set,
            eval_dataset=valid_set,
            processing_class=classifier.tokenizer,
            data_collator=DataCollatorWithPadding(classifier.tokenizer),
            compute_metrics=validation_metrics(len(labels)) if evaluate else None,
            callbacks=callbacks.all,
        )
        if args.disable_tqdm:
            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(progress_lines())
        train_output, train_seconds = _run_trainer(setup, root, trainer, callbacks.stop, resume_from)
    except BaseException:
        if run is not None:
            run.finish(succeeded=False)
        raise
    return Trained(
        setup=setup,
        trainer=trainer,
        classifier=classifier,
        optimizer_groups=optimizer_groups,
        train_output=train_output,
        train_seconds=train_seconds,
        resumed_from_step=int(resume_from.name.split("-")[1]) if resume_from is not None else None,
        early_stopping=callbacks.early_stopping,
        unfreezing=callbacks.unfreezing,
        run=run,
    )


def _run_trainer(
    setup: Setup, root: Path, trainer: Any, stop: Any, resume_from: Path | None
) -> tuple[Any, float]:
    """Train (resuming from ``resume_from``); the Trainer's output and the seconds it took.

    Raises:
        TrainingPreempted: SIGTERM stopped training after it saved a checkpoint.
    """
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
    return train_output, train_seconds


def applied_techniques(
    classifier: Classifier,
    setup: Setup,
    args: Any,
    layer_learning_rates: dict[str, float] | None,
) -> AppliedTechniques:
    """The record of what training applied, read off the trained model's state."""
    from refinery.training.techniques import frozen_parts, lora_summary, parameter_counts, unwrap_model

    model, parts, tcfg = classifier.model, classifier.parts, setup.cfg.training
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
        dropout=classifier.dropout,
        scheduler=str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        gradient_accumulation_steps=int(args.gradient_accumulation_steps),
        effective_batch_size=int(args.per_device_train_batch_size * args.gradient_accumulation_steps),
        precision=setup.settings.precision,
        optimizer=str(getattr(args.optim, "value", args.optim)),
        attention=str(getattr(unwrap_model(model).config, "_attn_implementation", None) or "default"),
        pooling=saved_pooling(unwrap_model(model)),
        compiled=bool(args.torch_compile),
        lora=lora_summary(model, tcfg.lora) if tcfg.lora.enabled else None,
    )

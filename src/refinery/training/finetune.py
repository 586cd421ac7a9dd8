"""Fine-tuning a pre-trained transformer as a text classifier: the fit, then the refit, then the save.

:func:`finetune` takes these steps, each in a module of its own:

1. read the prepared splits and class weights (:mod:`refinery.training.splits`), resolve the base model
   (:mod:`refinery.training.base_model`) and the device (:mod:`refinery.training.device`);
2. the *validation fit*: train a fresh classifier on the train split, evaluated on the validation split
   after every epoch (:func:`refinery.training.trainer.train`); training stops early once validation
   macro-F1 has not improved for ``training.early_stopping_patience`` epochs, and the best epoch's
   weights are loaded back and scored once more for the record (:class:`~refinery.training.records.TrainingResult`);
3. with ``training.refit``, the *refit*: a fresh model trains on the train and validation rows together
   for the fit's best epoch count, and that one is saved instead
   (:class:`~refinery.training.records.Refit`);
4. save the model, its tokenizer and ``training.json``: assembled in a temporary sibling folder and
   published whole (:func:`refinery.atomic.staged_dir`), so the output directory appears only when
   everything is written.

When the prepared data records ``class_weights`` (``data.prepare.balance: class_weights``), the training
loss is a class-weighted cross-entropy; ``training.label_smoothing`` smooths it (weighted or not). The
validation loss stays the plain cross-entropy, so it compares across runs with and without weights or
smoothing. The techniques ``training`` configures live in :mod:`refinery.training.techniques`.

Checkpoints (:mod:`refinery.training.checkpointing`) make both trainings resumable after a preemption;
a refit run records the finished fit in its checkpoint folder, so a re-run resumes the refit rather
than fitting again. Every training is one MLflow run in the registry's experiment
(:mod:`refinery.training.tracking`: parameters, per-epoch curves, final metrics); its id is recorded in
``training.json`` with the techniques applied. A LoRA run saves the adapters merged into a plain model
(``training.lora.merge``, the default) or the adapter alone, beside the base model it applies to (see
:func:`refinery.training.techniques.save_lora`).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from refinery.atomic import staged_dir
from refinery.errors import TrainingError
from refinery.training.base_model import resolve_base
from refinery.training.device import detect_device, restore_torch_threads, world
from refinery.training.records import TRAINING_JSON, Refit, TrainingResult, epoch_history, samples_per_second
from refinery.training.splits import TrainingData, read_training_data
from refinery.training.trainer import Setup, Trained, train

if TYPE_CHECKING:
    from refinery.config import LoraConfig, RunConfig
    from refinery.training.tracking import TrainingRun

logger = logging.getLogger(__name__)

# Under a refit run's checkpoint folder: the validation fit's result once it is done, and the refit's
# own checkpoints.
FIT_JSON = "fit.json"
REFIT = "refit"


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
    rank, world_size = world()
    _check_batch_split(tcfg.batch_size, world_size)
    base = resolve_base(cfg.model.base, str(cfg.model.cache_dir))
    data = read_training_data(Path(data_dir), labels)
    run_key, checkpoints = _checkpoint_folder(cfg, Path(data_dir), run_key)
    _quiet_progress_bars()
    device, settings = detect_device(tcfg)
    setup = Setup(cfg, base, labels, settings, world_size, data.class_weights, run_key)
    checkpoints.mkdir(parents=True, exist_ok=True)
    tracking = _Tracking()
    try:
        with _model_folder(Path(out_dir), rank) as staging:
            with restore_torch_threads():
                result, shipped = _validation_fit(setup, data, checkpoints, device, tracking, rank)
                if tcfg.refit:
                    result, shipped = _refit(setup, data, checkpoints, result, tracking)
            tracking.log_final(result)
            if staging is not None:
                _save(shipped, result, staging, tcfg.lora)
    except BaseException:
        tracking.finish(succeeded=False)
        raise
    if rank == 0:
        # Checkpoints outlive a preempted or failed run (the next attempt resumes); not a finished one.
        from refinery.training.checkpointing import remove_run

        remove_run(checkpoints)
    tracking.finish(succeeded=True)
    _log_done(base, result, Path(out_dir))
    return result


def _check_batch_split(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise TrainingError(
            f"training.batch_size {batch_size} does not split evenly over {world_size} processes"
            " (training.processes_per_node)"
        )


def _checkpoint_folder(cfg: RunConfig, data_dir: Path, run_key: str | None) -> tuple[str, Path]:
    """The run key (by default a hash of the configuration and the splits) and its checkpoint folder
    under ``training.checkpoint.dir``."""
    import hashlib

    from refinery.training.checkpointing import local_run_key

    if not run_key:
        digest = hashlib.sha256()
        for split in ("train", "validation"):
            digest.update((data_dir / f"{split}.parquet").read_bytes())
        run_key = local_run_key(cfg.digest(), digest.hexdigest())
    folder = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_key)
    return run_key, Path(str(cfg.training.checkpoint.dir)) / folder


def _quiet_progress_bars() -> None:
    """Off a terminal, turn off the weight loading and saving bars, which would print one line per
    redraw into a step's log."""
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@contextmanager
def _model_folder(out_dir: Path, rank: int) -> Iterator[Path | None]:
    """The staging folder the first process assembles the model in, published as ``out_dir`` when the
    body returns (removed when it raises); None in the other data-parallel processes, which save nothing."""
    if rank != 0:
        yield None
        return
    with staged_dir(out_dir) as staging:
        yield staging


class _Tracking:
    """The MLflow run of this fine-tuning, once a training opened it (none when ``training.tracking`` is
    off, or in the data-parallel processes after the first)."""

    def __init__(self) -> None:
        self.run: TrainingRun | None = None

    def adopt(self, trained: Trained) -> None:
        """Take the run ``trained`` opened, unless one is open already."""
        self.run = self.run or trained.run

    def log_final(self, result: TrainingResult) -> None:
        """Log the result's headline numbers as ``final_*`` metrics."""
        if self.run is not None:
            metrics = {f"final_{k}": v for k, v in result.metrics().items()}
            self.run.log_metrics(metrics, step=result.global_steps)

    def finish(self, succeeded: bool) -> None:
        """Close the run as FINISHED or FAILED."""
        if self.run is not None:
            self.run.finish(succeeded=succeeded)


def _validation_fit(
    setup: Setup, data: TrainingData, checkpoints: Path, device: str, tracking: _Tracking, rank: int
) -> tuple[TrainingResult, Trained | None]:
    """Train on the train split with validation after every epoch and score the best epoch; the result
    and the training (None when a refit run resumes after its finished fit, read from ``fit.json``)."""
    refit = setup.cfg.training.refit
    fitted = checkpoints / FIT_JSON
    if refit and fitted.is_file():
        print(f"validation fit done ({fitted}); resuming the refit", flush=True)
        return TrainingResult.from_json(fitted), None
    fit = train(setup, checkpoints, data.train, data.validation, float(setup.cfg.training.epochs), track=True)
    tracking.adopt(fit)
    result = _fit_result(fit, data, checkpoints, device)
    if refit and rank == 0:
        # A re-run after a preemption during the refit resumes the refit instead of fitting again.
        result.write_json(fitted)
    return result, fit


def _fit_result(fit: Trained, data: TrainingData, checkpoints: Path, device: str) -> TrainingResult:
    """Load the best evaluation's weights into the fit's model, score them once more and record the fit."""
    from refinery.training.checkpointing import load_best_weights

    setup, trainer = fit.setup, fit.trainer
    if setup.world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has written the best weights before anyone loads them
    load_best_weights(trainer.model, checkpoints)
    # Read these before the final evaluate(), which adds a log entry and runs the callbacks.
    history = epoch_history(
        trainer.state.log_history, fit.unfreezing.schedule if fit.unfreezing is not None else None
    )
    patience = setup.cfg.training.early_stopping_patience
    stopped_early = (
        fit.early_stopping.early_stopping_patience_counter >= patience
        and trainer.state.global_step < trainer.state.max_steps
    )
    final = trainer.evaluate()
    # The Trainer's own samples/s assumes every planned epoch ran; count what did run.
    epochs_run = float(trainer.state.epoch or 0.0)
    return TrainingResult(
        base_model=str(setup.base),
        labels=setup.labels,
        max_length=fit.classifier.max_length,
        epochs_run=round(epochs_run, 4),
        global_steps=int(trainer.state.global_step),
        stopped_early=stopped_early,
        best_validation_macro_f1=float(final["eval_macro_f1"]),
        validation_accuracy=float(final["eval_accuracy"]),
        validation_loss=float(final["eval_loss"]),
        train_loss=float(fit.train_output.training_loss),
        train_seconds=round(fit.train_seconds, 3),
        train_samples=len(data.train),
        validation_samples=len(data.validation),
        train_samples_per_second=samples_per_second(epochs_run, len(data.train), fit.train_seconds),
        device=device,
        history=history,
        class_weights=data.class_weights,
        mlflow_run_id=fit.run.run_id if fit.run is not None else None,
        techniques=fit.applied(),
        resumed_from_step=fit.resumed_from_step,
        processes=setup.world_size,
    )


def _refit(
    setup: Setup, data: TrainingData, checkpoints: Path, fitted: TrainingResult, tracking: _Tracking
) -> tuple[TrainingResult, Trained]:
    """Train a fresh model on train + validation for the fit's best epoch count; the fit's result with
    the refit recorded, and the refit's training (whose model is the one saved)."""
    epochs = fitted.best_epoch()
    print(
        f"refit: a fresh model on the {len(data.train)} train and {len(data.validation)} validation rows"
        f" for {epochs:g} epochs, the validation fit's best",
        flush=True,
    )
    both = pd.concat([data.train, data.validation], ignore_index=True)
    refit = train(setup, checkpoints / REFIT, both, None, epochs, track=tracking.run is None)
    tracking.adopt(refit)
    result = dataclasses.replace(
        fitted,
        refit=_refit_record(refit, epochs, len(both)),
        techniques=refit.applied(),
        mlflow_run_id=tracking.run.run_id if tracking.run is not None else fitted.mlflow_run_id,
    )
    return result, refit


def _refit_record(trained: Trained, epochs: float, samples: int) -> Refit:
    """The record of ``trained``, the refit's training of ``samples`` rows for ``epochs``."""
    ran = float(trained.trainer.state.epoch or 0.0)
    return Refit(
        epochs=round(epochs, 4),
        global_steps=int(trained.trainer.state.global_step),
        train_samples=samples,
        train_loss=float(trained.train_output.training_loss),
        train_seconds=round(trained.train_seconds, 3),
        train_samples_per_second=samples_per_second(ran, samples, trained.train_seconds),
        resumed_from_step=trained.resumed_from_step,
    )


def _save(shipped: Trained | None, result: TrainingResult, folder: Path, lora: LoraConfig) -> None:
    """Write the model (the best evaluation's weights, or the refit's), its tokenizer and ``training.json``.

    Saved directly rather than with ``trainer.save_model``, which adds a pickled ``training_args.bin``.
    """
    # Only a refit resumes past its validation fit, and then the refit trained the model to save.
    assert shipped is not None
    if lora.enabled:
        from refinery.training.techniques import save_lora

        save_lora(shipped.model, folder, merge=lora.merge)
    else:
        shipped.model.save_pretrained(folder)
    shipped.classifier.tokenizer.save_pretrained(folder)
    result.write_json(folder / TRAINING_JSON)


def _log_done(base: Path, result: TrainingResult, out_dir: Path) -> None:
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

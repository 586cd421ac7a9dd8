"""training.refit: after the validation fit picks its best epoch, a fresh model trains on the train and
validation rows together for that many epochs, and that model is the one saved."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.numpy import load_file
from tests.unit.training.test_finetune import LEARN, learnable, macro_f1, training_runs, write_splits

from refinery.training.finetune import finetune
from refinery.training.records import TRAINING_JSON, TrainingResult


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_splits(tmp_path / "prepared", learnable(240, seed=1), learnable(60, seed=2))


def test_refit_trains_a_fresh_model_on_train_and_validation_for_the_best_epochs(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    settings = [*LEARN, "training.epochs=4", "training.early_stopping_patience=3"]
    plain = finetune(make_config(settings), data_dir, tmp_path / "plain")
    cfg = make_config([*settings, "training.refit=true"])
    result = finetune(cfg, data_dir, tmp_path / "refit")

    # The validation fit is the plain run (same seed, same rows); its record is the result's.
    assert plain.refit is None
    assert result.history == plain.history
    assert result.best_validation_macro_f1 == plain.best_validation_macro_f1
    best = max(plain.history, key=lambda row: row["validation_macro_f1"])["epoch"]
    assert result.best_epoch() == best

    refit = result.refit
    assert refit is not None
    assert refit.epochs == best
    assert refit.train_samples == 240 + 60
    # Batches of 16 over 300 rows, for the best epoch count: the refit saw the validation rows too.
    assert refit.global_steps == math.ceil(300 / 16) * best
    assert refit.train_seconds > 0 and refit.train_loss > 0 and refit.resumed_from_step is None

    # The model saved is the refit's, not the validation fit's best epoch, and it has learned the task.
    saved, fitted = (
        load_file(tmp_path / "refit" / "model.safetensors"),
        load_file(tmp_path / "plain" / "model.safetensors"),
    )
    assert saved.keys() == fitted.keys()
    assert any((saved[k] != fitted[k]).any() for k in saved)
    assert macro_f1(tmp_path / "refit", learnable(80, seed=3)) >= 0.9

    assert TrainingResult.from_json(tmp_path / "refit" / TRAINING_JSON) == result
    metrics = result.metrics()
    assert metrics["refit_epochs"] == best and metrics["refit_train_samples"] == 300.0
    checkpoints = Path(cfg.training.checkpoint.dir)  # type: ignore[attr-defined]
    assert list(checkpoints.glob("*")) == [], "a finished run's checkpoints, the refit's included, go"

    # One MLflow run records both trainings: the refit setting and the refit's numbers.
    run = next(r for r in training_runs(cfg) if r.info.run_id == result.mlflow_run_id)
    assert run.data.params["training.refit"] == "True"
    assert run.data.metrics["final_refit_train_samples"] == 300.0
    assert run.data.metrics["final_refit_epochs"] == best


def test_a_step_limited_fit_is_refit_for_the_fraction_of_an_epoch_it_ran(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    """A smoke run's step limit ends the validation fit within its first epoch; the refit trains for that
    fraction of an epoch over its own rows, not for the step limit."""
    cfg = make_config([*LEARN, "training.epochs=2", "training.max_steps=5", "training.refit=true"])
    result = finetune(cfg, data_dir, tmp_path / "out")
    assert result.global_steps == 5
    assert result.refit is not None
    assert result.refit.epochs == pytest.approx(result.best_epoch(), abs=1e-4)
    assert result.refit.global_steps == math.ceil(math.ceil(300 / 16) * result.refit.epochs)

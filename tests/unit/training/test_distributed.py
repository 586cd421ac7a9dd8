"""Data-parallel fine-tuning on CPU: two processes under torchrun with the gloo backend train the same
model as one process does, and the first process alone writes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from refinery.training.distributed import launch_command, train

SETTINGS = [
    "training.epochs=8",
    "training.learning_rate=0.002",
    "training.batch_size=16",
    "training.early_stopping_patience=5",
    "model.max_length=32",
]


def test_two_gloo_processes_match_one_process(make_config: Callable[..., object], tmp_path: Path) -> None:
    from refinery.data.prepare import prepare_data

    single_cfg = make_config(SETTINGS)
    prepare_data(single_cfg, tmp_path / "data")
    single = train(single_cfg, tmp_path / "data", tmp_path / "single")
    ddp_cfg = make_config([*SETTINGS, "training.processes_per_node=2"])
    ddp = train(ddp_cfg, tmp_path / "data", tmp_path / "ddp")

    assert (single.processes, ddp.processes) == (1, 2)
    assert ddp.global_steps == single.global_steps, "the global batch stays training.batch_size"
    assert ddp.train_samples == single.train_samples
    assert single.best_validation_macro_f1 > 0.6, "the single run learned something"
    # Not bit-identical: each process groups its own shard by length, so batches are made of other rows
    # (measured: macro-F1 0.754 vs 0.716 on 90 validation rows, loss 0.61 vs 0.72, train loss 0.45 vs 0.50).
    assert ddp.best_validation_macro_f1 == pytest.approx(single.best_validation_macro_f1, abs=0.05)
    assert ddp.validation_loss == pytest.approx(single.validation_loss, rel=0.2)
    assert ddp.train_loss == pytest.approx(single.train_loss, rel=0.2)
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "single").iterdir())
    assert not list(tmp_path.glob(".ddp*")), "no other process left a staging folder behind"


def test_an_uneven_batch_split_is_refused_when_the_configuration_loads(
    make_config: Callable[..., object],
) -> None:
    from refinery.errors import ConfigError

    with pytest.raises(ConfigError, match=r"training\.batch_size.*training\.processes_per_node") as caught:
        make_config([*SETTINGS, "training.batch_size=15", "training.processes_per_node=2"])
    assert "15" in str(caught.value) and "2" in str(caught.value)


def test_the_launch_command_starts_one_worker_per_process(tmp_path: Path) -> None:
    command = launch_command(4, tmp_path / "c.json", tmp_path / "d", tmp_path / "m", 29500, "run-1")
    assert command[1:4] == ["-m", "torch.distributed.run", "--nnodes=1"]
    assert "--nproc_per_node=4" in command and command[-2:] == ["--run-key", "run-1"]

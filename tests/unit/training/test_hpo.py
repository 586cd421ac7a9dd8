"""Hyper-parameter search: grid and bayesian suggestions, the winner by the configured metric, and the
search steps on the tiny model (a trial that fails to train is recorded, the best model carries on)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from statistics import median

import pytest

from refinery.config import HpoConfig
from refinery.errors import TrainingError
from refinery.orchestration import steps
from refinery.training.hpo import TrialRecord, best_trial, suggest, trial_config, trials_table


def run_search(hpo: HpoConfig, score: Callable[[dict], float | None]) -> list[TrialRecord]:
    """Every round of ``hpo`` against a synthetic objective, the way the pipeline runs them."""
    history: list[TrialRecord] = []
    for count in hpo.rounds():
        for params in suggest(hpo, history, count):
            value = score(params)
            history.append(
                TrialRecord(len(history), params, value, error=None if value is not None else "boom")
            )
    return history


def test_a_grid_runs_every_combination_once_in_one_round() -> None:
    hpo = HpoConfig(
        enabled=True,
        strategy="grid",
        space={"learning_rate": [1e-5, 3e-5], "batch_size": [8, 16, 32], "epochs": [2]},
    )
    assert hpo.rounds() == [6]
    history = run_search(hpo, lambda p: p["learning_rate"] * p["batch_size"])
    combos = {(t.params["learning_rate"], t.params["batch_size"], t.params["epochs"]) for t in history}
    assert len(history) == len(combos) == 6
    assert best_trial(history, hpo.metric).params == {"learning_rate": 3e-5, "batch_size": 32, "epochs": 2}


def test_bayesian_rounds_learn_from_the_finished_trials() -> None:
    hpo = HpoConfig(
        enabled=True,
        trials=30,
        parallelism=3,
        space={"learning_rate": {"low": 1e-6, "high": 1e-2, "log": True}},
    )
    assert hpo.rounds() == [3] * 10

    def distance(params: dict) -> float:  # the best learning rate is 1e-4
        return abs(math.log10(params["learning_rate"]) + 4)

    history = run_search(hpo, lambda p: -distance(p))
    first, last = history[:10], history[-10:]
    # TPE, told the results, samples closer to the optimum than the random start-up trials did.
    assert median(distance(t.params) for t in last) < median(distance(t.params) for t in first) / 2
    assert len({t.params["learning_rate"] for t in history}) == 30

    # The same history gives the same suggestions; another history, other ones.
    again = suggest(hpo, history[:12], 3)  # past the 10 random start-up trials
    assert again == suggest(hpo, history[:12], 3)
    assert again != suggest(hpo, [TrialRecord(t.number, t.params, -t.value) for t in history[:12]], 3)


def test_failed_trials_are_skipped_and_a_loss_is_minimised() -> None:
    hpo = HpoConfig(enabled=True, strategy="grid", metric="validation_loss", space={"batch_size": [4, 8, 16]})
    history = run_search(hpo, lambda p: None if p["batch_size"] == 4 else 1.0 / p["batch_size"])
    assert best_trial(history, "validation_loss").params == {"batch_size": 16}
    table = trials_table(history, "validation_loss")
    assert "failed: boom" in table and "| 0.0625 | best |" in table
    with pytest.raises(TrainingError, match=r"every one of the 1 search trials failed: trial 0: boom"):
        best_trial([TrialRecord(0, {"batch_size": 4}, None, error="boom")], "validation_loss")


def test_grid_needs_values_and_a_space_must_vary_something() -> None:
    with pytest.raises(ValueError, match="a grid needs lists of values, not ranges: learning_rate"):
        HpoConfig(strategy="grid")
    with pytest.raises(ValueError, match="space varies nothing"):
        HpoConfig(space={"learning_rate": None})


def test_trial_settings_are_validated_like_any_config(make_config: Callable[..., object]) -> None:
    cfg = make_config()
    tried = trial_config(cfg, {"learning_rate": 3e-4, "batch_size": 8})
    assert (tried.training.learning_rate, tried.training.batch_size) == (3e-4, 8)
    assert tried.training.epochs == cfg.training.epochs
    with pytest.raises(TrainingError, match=r"trial settings \{'batch_size': 0\} are not valid"):
        trial_config(cfg, {"batch_size": 0})


def test_search_steps_train_each_trial_and_keep_the_best_model(
    make_config: Callable[..., object], tmp_path: Path
) -> None:
    from refinery.data.prepare import prepare_data

    cfg = make_config(
        [
            "training.max_steps=4",
            "hpo.enabled=true",
            "hpo.strategy=grid",
            "hpo.space.learning_rate=[0.0001,0.003]",
            # A batch size of 0 is invalid: that trial is recorded as failed, the search goes on.
            "hpo.space.batch_size=[8,0]",
        ]
    )
    prepare_data(cfg, tmp_path / "data")
    config = cfg
    trials = steps.suggest_trials(config, round_index=0, history=[], out_dir=tmp_path / "trials")
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "trials" / "trials.json").read_text()) == trials
    results, models = [], []
    for trial in trials:
        out = tmp_path / f"trial-{trial['number']}"
        try:
            results.append(steps.finetune_trial(config, tmp_path / "data", trial, out))
        except TrainingError:
            pytest.fail("a trial's training error must be recorded, not raised")
        models.append(out)
    assert [r.get("value") is None for r in results] == [False, True, False, True]
    history = steps.merge_round(config, [], results, models, None, tmp_path / "best", tmp_path / "table.md")
    winner = best_trial([TrialRecord.from_dict(r) for r in history], cfg.hpo.metric)
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == (
        tmp_path / f"trial-{winner.number}" / "model.safetensors"
    ).read_bytes()
    search = json.loads((tmp_path / "best" / "search.json").read_text())
    assert search["best_trial"] == winner.number and len(search["trials"]) == 4
    assert "| best |" in (tmp_path / "table.md").read_text()

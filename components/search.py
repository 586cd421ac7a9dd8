from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def suggest_trials(
    hpo_config: dict, round_index: int, history: list[dict], trials: Output[Artifact]
) -> list[dict]:
    """The next round of a hyper-parameter search: one {"number", "params"} per trial."""
    from refinery.config import step_config
    from refinery.orchestration import steps

    return steps.suggest_trials(
        step_config(hpo=hpo_config), round_index=round_index, history=history, out_dir=trials.path
    )


def finetune_trial(
    data_config: dict,
    model_config: dict,
    training_config: dict,
    registry_config: dict,
    hpo_config: dict,
    dataset: Input[Dataset],
    trial: dict,
    model: Output[Model],
    run_key: str = "",
) -> dict:
    """One search trial: fine-tune with the trial's training settings; returns its record."""
    from refinery.config import step_config
    from refinery.orchestration import steps

    cfg = step_config(
        data=data_config,
        model=model_config,
        training=training_config,
        registry=registry_config,
        hpo=hpo_config,
    )
    return steps.finetune_trial(cfg, data_dir=dataset.path, trial=trial, out_dir=model.path, run_key=run_key)


def merge_round(
    hpo_config: dict,
    history: list[dict],
    results: list[dict],
    models: Input[list[Model]],
    best: Output[Model],
    table: Output[Markdown],
    incumbent: Input[Model] = None,
) -> NamedTuple("Search", [("history", list[dict])]):  # type: ignore[valid-type]  # the form KFP reads
    """Add a round's trials to the history; the best model so far goes on, with a table of all trials."""
    from collections import namedtuple

    from refinery.config import step_config
    from refinery.orchestration import steps

    merged = steps.merge_round(
        step_config(hpo=hpo_config),
        history=history,
        results=results,
        model_dirs=[m.path for m in models],
        incumbent_dir=incumbent.path if incumbent is not None else None,
        out_dir=best.path,
        table_path=table.path,
    )
    return namedtuple("Search", ["history"])(merged)

"""The training pipeline: validate -> prepare -> finetune -> evaluate -> gate -> (register, package, promote)."""
# No `from __future__ import annotations` here or in components/: KFP reads the annotations as types.

from typing import Any

import components
from kfp import dsl

from pipelines.resources import apply_profile, set_finetune_retry
from refinery.config import EnvironmentResources, HpoConfig
from refinery.version import Images

PIPELINE_NAME = "refinery-training"


def _search(ops: Any, config: Any, dataset: Any, hpo: HpoConfig) -> tuple[Any, list[Any], list[Any]]:
    """Hyper-parameter search in place of one finetune task: per round (unrolled here, at compile time)
    suggest the trials, train each in a ParallelFor, and merge them into the history and the best model
    so far. Returns the best model's output, the trial tasks and the other search tasks."""
    history: Any = []
    best: Any = None
    trial_tasks, search_tasks = [], []
    for index in range(len(hpo.rounds())):
        suggested = ops.suggest_trials(config=config, round_index=index, history=history)
        with dsl.ParallelFor(suggested.outputs["Output"], parallelism=hpo.parallelism) as trial:
            trained = ops.finetune_trial(
                config=config, dataset=dataset, trial=trial, run_key=dsl.PIPELINE_JOB_NAME_PLACEHOLDER
            )
        incumbent = {} if best is None else {"incumbent": best}
        merged = ops.merge_round(
            config=config,
            history=history,
            results=dsl.Collected(trained.outputs["Output"]),
            models=dsl.Collected(trained.outputs["model"]),
            **incumbent,
        )
        history, best = merged.outputs["history"], merged.outputs["best"]
        trial_tasks.append(trained)
        search_tasks += [suggested, merged]
    return best, trial_tasks, search_tasks


def build_training_pipeline(
    images: Images | None = None,
    resources: EnvironmentResources | None = None,
    *,
    checkpoint_dir: str | None = None,
    model_cache_dir: str | None = None,
    hpo: HpoConfig | None = None,
) -> Any:
    """The pipeline with its steps on ``images`` and, for a cluster, on ``resources``.

    Args:
        images: The project and GPU images (default: this version's).
        resources: One environment's resource profiles: ``finetune`` for the fine-tuning task,
            ``steps`` for every other task, and the finetune retry policy. None (kfp.local runs) sets
            nothing, not even retries: kfp.local honours them, and a local failure is no preemption.
        checkpoint_dir: Where the checkpoint PVC is mounted (the config's ``training.checkpoint.dir``).
        model_cache_dir: Where the model cache PVC is mounted (the config's ``model.cache_dir``).
        hpo: When enabled, a hyper-parameter search replaces the finetune task (its shape, rounds and
            parallelism, is fixed here, at compile time); the best trial's model goes on.

    Raises:
        ConfigError: A profile is inconsistent (e.g. a PVC without an absolute mount path).
    """
    ops = components.build(images or Images.default())
    mounts = {"checkpoint_dir": checkpoint_dir, "model_cache_dir": model_cache_dir}

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate labelled data, fine-tune, gate against the champion, then register, package and promote.",
    )
    def training_pipeline(config: str):
        """One pass of the refinement loop; ``config`` is a resolved refinery RunConfig as JSON."""
        validated = ops.validate_data(config=config)
        prepared = ops.prepare_data(config=config).after(validated)
        if hpo is not None and hpo.enabled:
            model, finetune_tasks, search_tasks = _search(ops, config, prepared.outputs["dataset"], hpo)
        else:
            # Checkpoints keyed by the pipeline run: a retried (preempted) task resumes from them.
            trained = ops.finetune(
                config=config, dataset=prepared.outputs["dataset"], run_key=dsl.PIPELINE_JOB_NAME_PLACEHOLDER
            )
            model, finetune_tasks, search_tasks = trained.outputs["model"], [trained], []
        evaluated = ops.evaluate(config=config, dataset=prepared.outputs["dataset"], model=model)
        decided = ops.gate(config=config, evaluation=evaluated.outputs["evaluation"])
        with dsl.If(decided.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            registered = ops.register(
                config=config,
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                model=model,
                dataset=prepared.outputs["dataset"],
                evaluation=evaluated.outputs["evaluation"],
                validation=validated.outputs["validation"],
                decision=decided.outputs["decision"],
            )
            version = registered.outputs["Output"]
            packaged = ops.package(config=config, version=version)
            # One step commits the release to GitOps and then moves the champion alias, refusing when
            # another run replaced the champion this one was judged against.
            promoted = ops.promote(config=config, version=version, bento_tag=packaged.outputs["Output"])

        if resources is not None:
            # Fine-tuning on the GPU profile, retried after a failure or a preemption (its checkpoints
            # are on the checkpoint PVC); every other step on the CPU profile.
            for task in finetune_tasks:
                apply_profile(task, resources.finetune, **mounts)
                set_finetune_retry(task, resources.finetune_retries)
            steps = [validated, prepared, *search_tasks, evaluated, decided, registered, packaged, promoted]
            for task in steps:
                apply_profile(task, resources.steps, **mounts)

    return training_pipeline

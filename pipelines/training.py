"""The training pipeline: resolve -> validate -> prepare -> finetune -> evaluate -> gate -> (register,
package, check-serving -> (promote))."""
# No `from __future__ import annotations` here or in components/: KFP reads the annotations as types.

from typing import Any

import components
from kfp import dsl

from pipelines.resources import apply_profile, apply_run_settings, set_finetune_retry
from refinery.config import EnvironmentResources, HpoConfig, RunConfig, config_text, run_parameters
from refinery.version import Images

PIPELINE_NAME = "refinery-training"


def _search(ops: Any, run: Any, dataset: Any, hpo: HpoConfig) -> tuple[Any, list[Any], list[Any]]:
    """Hyper-parameter search in place of one finetune task: per round (unrolled here, at compile time)
    suggest the trials, train each in a ParallelFor, and merge them into the history and the best model
    so far. Returns the best model's output, the trial tasks and the other search tasks."""
    history: Any = []
    best: Any = None
    trial_tasks, search_tasks = [], []
    for index in range(len(hpo.rounds())):
        suggested = ops.suggest_trials(hpo_config=run.outputs["hpo"], round_index=index, history=history)
        with dsl.ParallelFor(suggested.outputs["Output"], parallelism=hpo.parallelism) as trial:
            trained = ops.finetune_trial(
                data_config=run.outputs["data"],
                model_config=run.outputs["model"],
                training_config=run.outputs["training"],
                registry_config=run.outputs["registry"],
                hpo_config=run.outputs["hpo"],
                dataset=dataset,
                trial=trial,
                run_key=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
        incumbent = {} if best is None else {"incumbent": best}
        merged = ops.merge_round(
            hpo_config=run.outputs["hpo"],
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
    cfg: RunConfig, images: Images | None = None, resources: EnvironmentResources | None = None
) -> Any:
    """The pipeline for ``cfg``, with its steps on ``images`` and, for a cluster, on ``resources``.

    The run form's parameters are typed and default to ``cfg``'s values: ``config`` (the rest of the
    configuration as YAML, or the URI of a YAML file), ``data_uri``, ``test_uri``, ``epochs``,
    ``learning_rate`` and ``environment``. What shapes the pods is fixed here instead: the search's
    rounds, the storage endpoint, the PVC mount paths, the images and the resource profiles.

    Args:
        cfg: The configuration: unresolved when compiled for a cluster (its paths then resolve where the
            steps run), resolved for a local run.
        images: The project and GPU images (default: this version's, in ``cfg.images.registry``); the
            project image is also the one promotion names to serve the model.
        resources: One environment's resource profiles, retry policies and credentials. None sets
            nothing: no retries, no Kubernetes settings (an embedded run, where a failure is no outage).

    Raises:
        ConfigError: A profile is inconsistent (e.g. a PVC without an absolute mount path).
    """
    ops = components.build(images or Images.default(registry=cfg.images.registry))
    serving_image = (images or Images.default(registry=cfg.images.registry)).project
    defaults = run_parameters(cfg)
    hpo = cfg.hpo
    mounts = {"checkpoint_dir": cfg.training.checkpoint.dir, "model_cache_dir": cfg.model.cache_dir}

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate labelled data, fine-tune, gate against the champion, then register, package and promote.",
    )
    def training_pipeline(
        config: str = config_text(cfg),
        data_uri: str = defaults["data_uri"],
        test_uri: str = defaults["test_uri"],
        epochs: float = defaults["epochs"],
        learning_rate: float = defaults["learning_rate"],
        environment: str = defaults["environment"],
    ):
        """One pass of the refinement loop. ``config`` is the configuration as YAML (or a URI of a YAML
        file); the other parameters override its values; an empty ``test_uri`` splits the test set off."""
        run = ops.resolve_config(
            config=config,
            data_uri=data_uri,
            test_uri=test_uri,
            epochs=epochs,
            learning_rate=learning_rate,
            environment=environment,
        )
        out = run.outputs
        data_inputs = {
            "data_config": out["data"],
            "serving_config": out["serving"],
            "data_fingerprint": out["data_fingerprint"],
            "feedback_through": out["feedback_through"],
        }
        validated = ops.validate_data(**data_inputs)
        prepared = ops.prepare_data(**data_inputs).after(validated)
        dataset = prepared.outputs["dataset"]
        if hpo.enabled:
            model, finetune_tasks, search_tasks = _search(ops, run, dataset, hpo)
        else:
            # Checkpoints keyed by the pipeline run: a retried (preempted) task resumes from them.
            trained = ops.finetune(
                data_config=out["data"],
                model_config=out["model"],
                training_config=out["training"],
                registry_config=out["registry"],
                dataset=dataset,
                run_key=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
            model, finetune_tasks, search_tasks = trained.outputs["model"], [trained], []
        evaluated = ops.evaluate(
            data_config=out["data"],
            model_config=out["model"],
            training_config=out["training"],
            evaluation_config=out["evaluation"],
            gate_config=out["gate"],
            registry_config=out["registry"],
            environment=environment,
            dataset=dataset,
            model=model,
        )
        decided = ops.gate(gate_config=out["gate"], evaluation=evaluated.outputs["evaluation"])
        with dsl.If(decided.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            registered = ops.register(
                data_config=out["data"],
                model_config=out["model"],
                training_config=out["training"],
                gate_config=out["gate"],
                registry_config=out["registry"],
                config_sha=out["config_sha"],
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                model=model,
                dataset=dataset,
                evaluation=evaluated.outputs["evaluation"],
                validation=validated.outputs["validation"],
                decision=decided.outputs["decision"],
            )
            version = registered.outputs["Output"]
            packaged = ops.package(
                data_config=out["data"],
                model_config=out["model"],
                registry_config=out["registry"],
                packaging_config=out["packaging"],
                version=version,
                dataset=dataset,
            )
            bento = {name: packaged.outputs[name] for name in ("bento_tag", "bento_uri", "bento_sha256")}
            # The Bento served as production serves it and loaded: gate.max.serving_* judge it.
            checked = ops.check_serving(
                model_config=out["model"],
                serving_config=out["serving"],
                gate_config=out["gate"],
                dataset=dataset,
                **bento,
            )
            with dsl.If(checked.outputs["Output"] == True, name="serving-check-passed"):  # noqa: E712
                # One step commits the release to GitOps and then moves the champion alias, refusing
                # when another run replaced the champion this one was judged against.
                promoted = ops.promote(
                    registry_config=out["registry"],
                    gitops_config=out["gitops"],
                    version=version,
                    image=serving_image,
                    **bento,
                )

        tasks = [run, validated, prepared, *finetune_tasks, *search_tasks, evaluated, decided]
        tasks += [registered, packaged, checked, promoted]
        apply_run_settings(tasks, cfg.storage.env(), resources)
        if resources is not None:
            # Fine-tuning on the GPU profile, retried after a failure or a preemption (its checkpoints
            # are on the checkpoint PVC); every other step on the CPU profile.
            for task in finetune_tasks:
                apply_profile(task, resources.finetune, **mounts)
                set_finetune_retry(task, resources.finetune_retries)
            for task in tasks:
                if task not in finetune_tasks:
                    apply_profile(task, resources.steps, **mounts)

    return training_pipeline

"""Thin KFP components, one per pipeline step.

Each module holds the body of one step: it adapts artifacts to paths and its configuration sections
(typed inputs, so the Kubeflow UI shows them and caching keys on them) to a config object, calls one
function in refinery.orchestration.steps, and records outputs and metrics. Imports live inside the bodies: a
component file's module-level imports do not exist when KFP runs the body. :func:`build` turns the
bodies into components on the images to run them on, chosen when a pipeline is built (never at import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfp import dsl

from components.check_serving import check_serving
from components.evaluate import evaluate
from components.finetune import finetune
from components.gate import gate
from components.monitor import monitor
from components.package import package
from components.prepare_data import prepare_data
from components.promote import promote
from components.register import register
from components.resolve_config import resolve_config
from components.search import finetune_trial, merge_round, suggest_trials
from components.validate_data import validate_data
from refinery.version import Images


@dataclass(frozen=True)
class Components:
    """The pipeline's steps as KFP components."""

    resolve_config: Any
    validate_data: Any
    prepare_data: Any
    finetune: Any
    evaluate: Any
    gate: Any
    register: Any
    package: Any
    check_serving: Any
    promote: Any
    suggest_trials: Any
    finetune_trial: Any
    merge_round: Any
    monitor: Any


def build(images: Images) -> Components:
    """Components on the project image, fine-tuning on the GPU image; nothing installed at run time."""

    def on(image: str, body: Any) -> Any:
        return dsl.component(body, base_image=image, install_kfp_package=False)

    return Components(
        resolve_config=on(images.project, resolve_config),
        validate_data=on(images.project, validate_data),
        prepare_data=on(images.project, prepare_data),
        finetune=on(images.gpu, finetune),
        evaluate=on(images.project, evaluate),
        gate=on(images.project, gate),
        register=on(images.project, register),
        package=on(images.project, package),
        check_serving=on(images.project, check_serving),
        promote=on(images.project, promote),
        suggest_trials=on(images.project, suggest_trials),
        finetune_trial=on(images.gpu, finetune_trial),
        merge_round=on(images.project, merge_round),
        monitor=on(images.project, monitor),
    )

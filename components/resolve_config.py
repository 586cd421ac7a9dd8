from typing import NamedTuple

from kfp.dsl import Artifact, Output


def resolve_config(
    config: str,
    data_uri: str,
    test_uri: str,
    epochs: float,
    learning_rate: float,
    environment: str,
    resolved: Output[Artifact],
) -> NamedTuple(  # type: ignore[valid-type]  # the form KFP reads
    "Run",
    [
        ("data", dict),
        ("model", dict),
        ("training", dict),
        ("evaluation", dict),
        ("gate", dict),
        ("registry", dict),
        ("packaging", dict),
        ("gitops", dict),
        ("serving", dict),
        ("hpo", dict),
        ("config_sha", str),
        ("data_fingerprint", str),
        ("feedback_through", int),
    ],
):
    """The run's configuration: ``config`` (YAML, or the URI of a YAML file) with the typed parameters on
    top, resolved here; each section goes on to the steps that read it, with the data's fingerprint and
    the newest service feedback id the run reads."""
    from collections import namedtuple

    from refinery.orchestration import steps

    parameters = {
        "data_uri": data_uri,
        "test_uri": test_uri,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "environment": environment,
    }
    run = steps.resolve_config(config, parameters, out_dir=resolved.path)
    names = [
        "data",
        "model",
        "training",
        "evaluation",
        "gate",
        "registry",
        "packaging",
        "gitops",
        "serving",
        "hpo",
    ]
    values: list = [run.sections[name] for name in names]
    values += [run.config_sha, run.data_fingerprint, run.feedback_through]
    return namedtuple("Run", [*names, "config_sha", "data_fingerprint", "feedback_through"])(*values)

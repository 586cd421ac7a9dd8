"""Hyper-parameter search over the finetune step: which trials to run, and which one won.

A search runs in rounds (:meth:`~refinery.config.HpoConfig.rounds`). Before each round,
:func:`suggest` turns the finished trials into the next round's settings: a grid enumerates every
combination of the listed values in one round; a bayesian search rebuilds an Optuna study from the
history (TPE, told every finished trial's result) and asks it for the round's trials, with the
"constant liar" so that trials asked together do not all land on the same point. Each trial is a plain
fine-tuning run with its settings applied to ``training`` (:func:`trial_config`); :func:`record` turns
its result into a :class:`TrialRecord`, and :func:`best_trial` picks the winner by ``hpo.metric``.

The pipeline unrolls the rounds at compile time: on a cluster the trials of a round are parallel tasks
(``dsl.ParallelFor``), each on a GPU node; kfp.local runs them one after the other. Everything here is
plain data in and out, so a search is testable without training anything.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from refinery.config import FloatRange, HpoConfig, RunConfig
from refinery.errors import TrainingError
from refinery.results import Record

if TYPE_CHECKING:
    from refinery.training.records import TrainingResult

# A bayesian search samples this share of its trials at random before TPE models the results (at least
# two, at most ten: Optuna's default of ten would leave a short search entirely random).
STARTUP_SHARE = 3


@dataclass(frozen=True)
class TrialRecord(Record):
    """One finished trial.

    Attributes:
        number: The trial's number in the search, from 0.
        params: The ``training`` settings it ran with.
        value: Its ``hpo.metric`` on the validation split (``None`` when it failed).
        metrics: The training result's flat metrics.
        error: Why it failed, when it did.
    """

    number: int
    params: dict[str, Any]
    # A default, because a failed trial's dict leaves it out (see to_dict).
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict without nulls (a KFP list parameter cannot carry them): a failed trial has
        ``error`` and no ``value``, a finished one the reverse."""
        return {k: v for k, v in super().to_dict().items() if v is not None}


def maximises(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (losses are minimised)."""
    return not metric.endswith("_loss")


def _distributions(hpo: HpoConfig) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict[str, Any] = {}
    for name, space in hpo.space.varied().items():
        if isinstance(space, FloatRange):
            out[name] = FloatDistribution(space.low, space.high, log=space.log)
        else:
            out[name] = CategoricalDistribution(list(space))
    return out


def _grid(hpo: HpoConfig) -> list[dict[str, Any]]:
    varied = hpo.space.varied()
    names = list(varied)
    values = [list(v) for v in varied.values()]  # type: ignore[arg-type]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def suggest(hpo: HpoConfig, history: list[TrialRecord], count: int) -> list[dict[str, Any]]:
    """The settings of the next ``count`` trials, given the finished ones.

    Args:
        hpo: The search configuration.
        history: Every trial finished so far (failed ones included: a bayesian search avoids them).
        count: How many trials to suggest.

    Returns:
        One dict of ``training`` settings per trial, JSON-safe.
    """
    if hpo.strategy == "grid":
        done = len(history)
        return _grid(hpo)[done : done + count]
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(hpo)
    sampler = optuna.samplers.TPESampler(
        # A fresh study per round: advance the seed so a round does not replay the last one's draws.
        seed=hpo.seed + len(history),
        n_startup_trials=max(2, min(10, hpo.trials // STARTUP_SHARE)),
        constant_liar=True,
    )
    study = optuna.create_study(
        direction="maximize" if maximises(hpo.metric) else "minimize", sampler=sampler
    )
    for trial in history:
        params = {k: v for k, v in trial.params.items() if k in distributions}
        state = TrialState.COMPLETE if trial.succeeded else TrialState.FAIL
        study.add_trial(
            create_trial(params=params, distributions=distributions, value=trial.value, state=state)
        )
    suggested = [study.ask(distributions).params for _ in range(count)]
    return [{k: _plain(v) for k, v in params.items()} for params in suggested]


def _plain(value: Any) -> Any:
    """Optuna hands back numpy scalars for categorical choices; the settings travel as JSON."""
    return value.item() if hasattr(value, "item") else value


def trial_config(cfg: RunConfig, params: dict[str, Any]) -> RunConfig:
    """``cfg`` with a trial's settings applied to ``training`` (validated like any config).

    Raises:
        TrainingError: A setting is not a ``training`` field or has an invalid value.
    """
    from pydantic import ValidationError

    training = {**cfg.training.model_dump(mode="json"), **params}
    try:
        return RunConfig.model_validate({**cfg.to_dict(), "training": training})
    except ValidationError as exc:
        raise TrainingError(f"trial settings {params} are not valid training settings: {exc}") from None


def objective(result: TrainingResult, metric: str) -> float:
    """The value of ``metric`` (``hpo.metric``) in a training result."""
    values = {
        "validation_macro_f1": result.best_validation_macro_f1,
        "validation_accuracy": result.validation_accuracy,
        "validation_loss": result.validation_loss,
    }
    return float(values[metric])


def record(number: int, params: dict[str, Any], result: TrainingResult, metric: str) -> TrialRecord:
    """The record of a finished trial."""
    return TrialRecord(number, params, objective(result, metric), result.metrics())


def best_trial(history: list[TrialRecord], metric: str) -> TrialRecord:
    """The trial with the best ``metric`` (the earliest one on a tie).

    Raises:
        TrainingError: No trial succeeded.
    """
    finished = [t for t in history if t.succeeded]
    if not finished:
        errors = "; ".join(f"trial {t.number}: {t.error}" for t in history)
        raise TrainingError(f"every one of the {len(history)} search trials failed: {errors}")
    sign = 1.0 if maximises(metric) else -1.0
    return max(finished, key=lambda t: (sign * float(t.value or 0.0), -t.number))


def trials_table(history: list[TrialRecord], metric: str) -> str:
    """A Markdown table of every trial, best first, the winner marked."""
    if not history:
        return "No trials ran.\n"
    winner = best_trial(history, metric).number if any(t.succeeded for t in history) else None
    names = sorted({name for t in history for name in t.params})
    sign = -1.0 if maximises(metric) else 1.0
    ordered = sorted(history, key=lambda t: (t.value is None, sign * (t.value or 0.0), t.number))
    lines = [
        f"# Hyper-parameter search: {len(history)} trials, {metric}",
        "",
        "| trial | " + " | ".join(names) + f" | {metric} | |",
        "|---|" + "---|" * len(names) + "---|---|",
    ]
    for t in ordered:
        cells = [
            f"{t.params[n]:.3g}" if isinstance(t.params.get(n), float) else str(t.params.get(n, ""))
            for n in names
        ]
        value = f"{t.value:.4f}" if t.value is not None else f"failed: {t.error}"
        mark = "best" if t.number == winner else ""
        lines.append(f"| {t.number} | " + " | ".join(cells) + f" | {value} | {mark} |")
    return "\n".join(lines) + "\n"

"""MLflow tracking of a fine-tuning run: one MLflow run per training, in the registry's tracking URI and
experiment (``registry.tracking_uri``, ``registry.experiment``).

The run records the training parameters, per-epoch curves (``train_loss``, ``learning_rate``,
``validation_loss``, ``validation_macro_f1``, ``validation_accuracy``, stepped by the optimizer step at
the end of the epoch) while training runs, and the final numbers of ``training.json`` (``final_*``).
Its id goes into ``training.json``. Uses MLflow's client API, never autologging or the process-wide
tracking URI.

Opening the run fails fast (a :class:`RegistryError` naming the URI) when the tracking back end is
unreachable, before any training. Once training runs, a failed write to the tracking back end is logged
as a warning and training goes on: a trained model is never lost to a tracking hiccup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from refinery.registry.mlflow_registry import Registry

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from refinery.config import RunConfig

logger = logging.getLogger(__name__)

STEP_TAG = "refinery.step"

# Trainer log keys -> the metric names of the per-epoch curves.
TRAIN_CURVES = {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}
VALIDATION_CURVES = {
    "eval_loss": "validation_loss",
    "eval_macro_f1": "validation_macro_f1",
    "eval_accuracy": "validation_accuracy",
}


def training_params(cfg: RunConfig) -> dict[str, str]:
    """The run's parameters: every ``training`` setting by dotted path, plus the model and labels."""

    def flatten(prefix: str, tree: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        for key, value in tree.items():
            if isinstance(value, Mapping):
                yield from flatten(f"{prefix}{key}.", value)
            elif isinstance(value, list | tuple):
                yield f"{prefix}{key}", ",".join(map(str, value))
            else:
                yield f"{prefix}{key}", str(value)

    params = dict(flatten("training.", cfg.training.model_dump(mode="json")))
    params.update(
        {
            "model.base": cfg.model.base,
            "model.max_length": str(cfg.model.max_length),
            "model.pooling": cfg.model.pooling,
            "data.labels": ",".join(cfg.data.labels),
        }
    )
    return params


class TrainingRun:
    """An open MLflow run recording one fine-tuning."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str) -> None:
        self._client = client
        self.run_id = run_id
        self._uri = uri

    @classmethod
    def start(cls, cfg: RunConfig, params: Mapping[str, str], tags: Mapping[str, str]) -> TrainingRun:
        """Open a run in ``registry.experiment`` (created when missing) and log ``params``.

        Raises:
            RegistryError: The tracking back end is unreachable or refuses the run; names the URI.
        """
        from mlflow.entities import Param, RunTag

        registry = Registry(cfg.registry)
        # The registry owns the connection (fast-failing probes, quiet MLflow) and the experiment, so the
        # training run lands where the register step later logs the model.
        client = registry._connect()
        experiment_id = registry._experiment()
        with registry._errors("open a training run"):
            run = client.create_run(
                experiment_id,
                run_name="finetune",
                tags={STEP_TAG: "finetune", **tags},
            )
            run_id = run.info.run_id
            client.log_batch(
                run_id,
                params=[Param(key, value) for key, value in params.items()],
                tags=[RunTag("mlflow.note.content", "Fine-tuning run of refinery's finetune step.")],
            )
        return cls(client, run_id, registry.uri)

    @contextmanager
    def _best_effort(self, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # the tracking store raises MLflow, database and HTTP errors
            logger.warning("MLflow run %s at %s: cannot %s: %s", self.run_id, self._uri, action, exc)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metrics at optimizer step ``step`` (best effort)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._best_effort("log metrics"):
            self._client.log_batch(
                self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
            )

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log more parameters (best effort)."""
        from mlflow.entities import Param

        with self._best_effort("log params"):
            self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def finish(self, succeeded: bool) -> None:
        """Close the run as FINISHED or FAILED (best effort)."""
        with self._best_effort("close the run"):
            self._client.set_terminated(self.run_id, "FINISHED" if succeeded else "FAILED")

    def callback(self) -> Any:
        """A Trainer callback logging each epoch's training loss, learning rate and validation scores."""
        from transformers import TrainerCallback

        run = self

        class EpochCurves(TrainerCallback):  # type: ignore[misc]
            def __init__(self) -> None:
                # The evaluation after training (of the best epoch) is no point of the curves.
                self._done = False

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                self._done = True

            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
            ) -> None:
                if self._done or not logs or "loss" not in logs:
                    return
                values = {name: logs[key] for key, name in TRAIN_CURVES.items() if key in logs}
                values["epoch"] = float(state.epoch or 0.0)
                run.log_metrics(values, step=state.global_step)

            def on_evaluate(
                self,
                args: Any,
                state: Any,
                control: Any,
                metrics: dict[str, float] | None = None,
                **kwargs: Any,
            ) -> None:
                if self._done or not metrics:
                    return
                values = {name: metrics[key] for key, name in VALIDATION_CURVES.items() if key in metrics}
                run.log_metrics(values, step=state.global_step)

        return EpochCurves()

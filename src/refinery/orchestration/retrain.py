"""One round of the drift monitor, and starting the retraining run it asks for where the configuration
says runs go.

One round (:func:`monitor_round`) first moves each environment's champion alias to what its overlay on
the GitOps branch serves (:func:`refinery.release.sync.sync_aliases`: a review branch merged since
the last round makes its version the champion), then checks the serving model's window. The same
functions serve every monitor: ``refinery monitor`` on a laptop, the Kubernetes CronJob, and the
monitoring pipeline's step in Kubeflow. An embedded configuration (``state_dir`` set) runs the training
pipeline with kfp.local in this process, as ``refinery run`` does. A cluster configuration submits it to
the Kubeflow Pipelines API (:mod:`refinery.orchestration.kfp_api`), so the run appears in the Kubeflow UI
beside the scheduled ones, gets the GPU profile of its environment and its retry policies, and the
monitor returns as soon as the run is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from refinery.config import RunConfig
    from refinery.monitoring.controller import MonitorDecision
    from refinery.release.sync import AliasSync


@dataclass(frozen=True)
class StartedRun:
    """A training run the monitor started.

    Attributes:
        run_id: kfp.local's run name, or the Kubeflow Pipelines run id.
        summary: What to show a person: the local run's summary, or the run's Kubeflow UI link.
    """

    run_id: str
    summary: str


def start_training(cfg: RunConfig, *, run_name: str | None = None) -> StartedRun:
    """Start one training run of ``cfg`` (as written, unresolved) and return it.

    Args:
        cfg: The configuration as written: its paths resolve where the steps run.
        run_name: The Kubeflow run's display name (a cluster configuration only).

    Raises:
        KfpApiError: (cluster) the Kubeflow Pipelines API is not configured, unreachable or refused the run.
    """
    if cfg.embedded:
        from refinery.orchestration.local import run_training

        summary = run_training(cfg)
        return StartedRun(summary.run_name, summary.to_text())
    from refinery.orchestration.kfp_api import submit_training

    run = submit_training(cfg, run_name=run_name)
    return StartedRun(run.run_id, f"retraining run {run.run_id} in Kubeflow Pipelines: {run.url}")


def retrain_starter(cfg: RunConfig, show: Callable[[str], None] | None = None) -> Callable[[], str]:
    """The ``start_retrain`` callback of :func:`refinery.monitoring.controller.monitor` for ``cfg``
    (as written): says it starts the run, starts it, shows its summary with ``show`` and returns the run
    id."""

    def start() -> str:
        if show is not None:
            show("starting a retraining run")
        started = start_training(cfg, run_name="refinery-retrain (drift monitor)")
        if show is not None:
            show(started.summary)
        return started.run_id

    return start


@dataclass(frozen=True)
class MonitorRound:
    """What one round of the monitor did.

    Attributes:
        aliases: Each environment's alias sync; empty when the GitOps repository could not be read.
        aliases_error: Why the aliases were not synced (the drift check ran anyway), or None.
        decision: The drift decision, recorded in the trigger log.
    """

    aliases: list[AliasSync]
    aliases_error: str | None
    decision: MonitorDecision

    def alias_lines(self) -> list[str]:
        """The alias moves and refusals worth a line (nothing when every alias was in sync)."""
        if self.aliases_error:
            return [f"aliases not synced: {self.aliases_error}"]
        return [
            f"alias {a.environment}: {a.outcome}: {a.message}"
            for a in self.aliases
            if a.changed or a.outcome == "refused"
        ]


def monitor_round(
    cfg: RunConfig,
    written: RunConfig,
    *,
    announce: Callable[[str], None] | None = None,
    show: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> MonitorRound:
    """Sync the champion aliases with the merged overlays, then check the serving model's window and,
    when the trigger policy fires, start a training run of ``written``.

    Args:
        cfg: The configuration, resolved where the monitor runs.
        written: The same configuration as written (the training run resolves it where its steps run).
        announce: Called with the signals' summary before a retrain starts.
        show: Called with the started run's summary.
        now: The time of the decision (default: now).

    Raises:
        MonitoringError, RegistryError, KfpApiError: As :func:`refinery.monitoring.controller.monitor`.
    """
    from refinery.errors import GitOpsError
    from refinery.monitoring.controller import monitor
    from refinery.release.sync import sync_aliases

    # A GitOps outage must not stop drift from being watched: the aliases wait for the next round.
    try:
        aliases, error = sync_aliases(cfg), None
    except GitOpsError as exc:
        aliases, error = [], str(exc)
    decision = monitor(cfg, retrain_starter(written, show=show), now=now, announce=announce)
    return MonitorRound(aliases, error, decision)

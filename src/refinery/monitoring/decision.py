"""The controller's decision on one window: a pure function of its inputs, and the record it leaves.

:func:`decide_action` takes the window's size, every signal's result and the trigger log's history and
returns exactly one action with its reason:

- ``insufficient_data``: the window is smaller than ``monitoring.min_window_size``;
- ``no_drift``: no signal allowed to fire (``monitoring.signals.<name>.fire``) fired;
- ``retrain_disabled``: a signal fired, but ``monitoring.retrain`` is off;
- ``drift_pending``: a signal fired, but not yet in ``monitoring.consecutive_windows`` windows in a row;
- ``awaiting_labels``: a signal fired, but fewer than ``monitoring.min_labelled_rows`` new labelled rows
  arrived since the champion was trained: a retrain would learn nothing new;
- ``suppressed_cooldown``: a retrain fired less than ``monitoring.cooldown_minutes`` ago;
- ``fired``: a retrain run is to be started.

Every decision names each signal with its value and threshold, the firing ones first.
:class:`MonitorDecision` is what one :func:`~refinery.monitoring.controller.monitor` call returns and
writes as ``decision.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from refinery.config import MonitoringConfig
from refinery.monitoring.drift import DriftResult
from refinery.monitoring.signals import SignalResult
from refinery.monitoring.trigger_log import Action, utc
from refinery.results import Record


class Verdict(NamedTuple):
    """What the controller decided and why, before anything is recorded."""

    action: Action
    reason: str
    policy: str = ""  # the part of the reason beyond the signals: why a drift did or did not retrain


def firing(signals: list[SignalResult], cfg: MonitoringConfig) -> list[SignalResult]:
    """The signals that fired and are allowed to fire a retrain (``monitoring.signals.<name>.fire``)."""
    return [s for s in signals if s.fired and getattr(cfg.signals, s.name).fire]


def _signal_summary(signals: list[SignalResult], cfg: MonitoringConfig) -> str:
    fired = firing(signals, cfg)
    rest = [s for s in signals if s not in fired]
    parts = [f"{s.name} fired: {s.detail}" for s in fired]
    parts += [f"{s.name} {'fired (reported only)' if s.fired else 'quiet'}: {s.detail}" for s in rest]
    return "; ".join(parts)


def decide_action(
    window_rows: int,
    signals: list[SignalResult] | None,
    last_fired: datetime | None,
    cfg: MonitoringConfig,
    now: datetime,
    *,
    streak: int = 0,
    new_labelled_rows: int | None = None,
) -> Verdict:
    """The controller's decision, as a pure function of its inputs.

    Args:
        window_rows: Predictions in the current window.
        signals: Every signal's result on the window; None when the window was too small to test.
        last_fired: When a retrain last fired for this model, or None.
        cfg: Monitoring settings (``min_window_size``, ``signals``, ``consecutive_windows``,
            ``min_labelled_rows``, ``retrain``, ``cooldown_minutes``).
        now: The time of the decision.
        streak: Earlier windows in a row, of the same champion, in which a firing signal fired.
        new_labelled_rows: Labelled rows that arrived since the champion was trained (None: not counted,
            no source of new labels is configured).

    Returns:
        The action and a reason naming each signal with its value and threshold.

    Raises:
        ValueError: The window is large enough but no signal result was given.
    """
    if window_rows < cfg.min_window_size:
        return Verdict(
            "insufficient_data",
            f"window has {window_rows} prediction(s) of the serving model, fewer than"
            f" monitoring.min_window_size={cfg.min_window_size}",
        )
    if signals is None:
        raise ValueError(f"a window of {window_rows} predictions needs signal results to decide on")
    summary = _signal_summary(signals, cfg)

    def drift(action: Action, policy: str) -> Verdict:
        return Verdict(action, f"drift: {summary}; {policy}", policy)

    if not firing(signals, cfg):
        return Verdict("no_drift", f"no drift: {summary}")
    if not cfg.retrain:
        return drift("retrain_disabled", "monitoring.retrain is off")
    if streak + 1 < cfg.consecutive_windows:
        return drift(
            "drift_pending",
            f"window {streak + 1} in a row of the monitoring.consecutive_windows={cfg.consecutive_windows} needed",
        )
    labelled = cfg.min_labelled_rows
    if labelled and (new_labelled_rows or 0) < labelled:
        counted = (
            f"{new_labelled_rows} new labelled row(s) arrived"
            if new_labelled_rows is not None
            else "no source of new labels is configured (data.feedback, data.incoming_uri)"
        )
        return drift(
            "awaiting_labels",
            f"{counted} since the champion was trained, fewer than monitoring.min_labelled_rows={labelled}:"
            " a retrain would learn nothing new",
        )
    if last_fired is not None:
        until = utc(last_fired) + timedelta(minutes=cfg.cooldown_minutes)
        if utc(now) < until:
            return drift(
                "suppressed_cooldown",
                f"a retrain fired at {utc(last_fired).isoformat()}, within the {cfg.cooldown_minutes:g} min"
                f" cooldown (until {until.isoformat()})",
            )
    counted = (
        f"{new_labelled_rows} new labelled row(s)" if new_labelled_rows is not None else "no labels counted"
    )
    return drift("fired", f"{counted}: starting a retrain")


@dataclass(frozen=True)
class MonitorDecision(Record):
    """The outcome of one :func:`monitor` call; written as ``decision.json`` next to the drift report.

    Attributes:
        action: One of ``fired``, ``suppressed_cooldown``, ``no_drift``, ``insufficient_data``,
            ``retrain_disabled``.
        reason: Why, with the numbers behind it.
        model_name: The registered model watched.
        champion_version: The champion version whose reference profile was used.
        window_rows: Predictions in the window.
        timestamp: When the decision was taken (UTC).
        decision_id: The row in the trigger log.
        drift: The descriptor drift result; None for ``insufficient_data``.
        retrain_run_id: The run started for a ``fired`` decision.
        report_dir: Folder holding ``drift_report.html``, ``drift.json`` and ``decision.json``.
        signals: Every signal's result on the window (empty for ``insufficient_data``).
        new_labelled_rows: Labelled rows that arrived since the champion was trained (None: no source
            of new labels is configured).
        policy: Why a drift did or did not start a retrain (the trigger policy's part of ``reason``).
    """

    action: Action
    reason: str
    model_name: str
    champion_version: str
    window_rows: int
    timestamp: datetime
    decision_id: int
    drift: DriftResult | None = None
    retrain_run_id: str | None = None
    report_dir: str | None = None
    signals: list[SignalResult] = field(default_factory=list)
    new_labelled_rows: int | None = None
    policy: str = ""

    def to_text(self) -> str:
        """A short human summary for the command line: the action, each signal, the policy's reason."""
        if not self.signals:
            lines = [f"{self.action}: {self.reason}"]
        else:
            fired = [s.name for s in self.signals if s.fired]
            lines = [
                f"{self.action}: " + (f"signals fired: {', '.join(fired)}" if fired else "no signal fired")
            ]
        lines.append(
            f"model {self.model_name} v{self.champion_version}, window of {self.window_rows} prediction(s)"
            " of that version"
        )
        for signal in self.signals:
            value = "not measured" if signal.value is None else f"{signal.value:.4f}"
            state = "FIRED" if signal.fired else "quiet"
            lines.append(f"  {signal.name:<18} {state:<6} {value:>12}  {signal.detail}")
        if self.new_labelled_rows is not None:
            lines.append(
                f"new labelled rows since v{self.champion_version} was trained: {self.new_labelled_rows}"
            )
        if self.signals and self.policy:
            lines.append(f"{self.action}: {self.policy}")
        if self.retrain_run_id:
            lines.append(f"retrain run: {self.retrain_run_id}")
        if self.drift is not None:
            lines.append(f"drift report: {self.drift.report}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The decision as the Kubeflow UI shows a monitor run's output: verdict, window, signals, policy."""
        lines = [
            f"## Drift monitor: {self.action}",
            "",
            f"Model **{self.model_name}** version {self.champion_version}: a window of {self.window_rows}"
            f" prediction(s) of that version, decision {self.decision_id} at {self.timestamp.isoformat()}.",
            "",
        ]
        if self.signals:
            lines += ["| signal | state | value | threshold | detail |", "|---|---|---:|---:|---|"]
            for s in self.signals:
                value = "not measured" if s.value is None else f"{s.value:.4f}"
                state = "**FIRED**" if s.fired else "quiet"
                lines.append(f"| {s.name} | {state} | {value} | {s.threshold:g} | {s.detail} |")
            lines.append("")
        if self.new_labelled_rows is not None:
            lines += [
                f"New labelled rows since version {self.champion_version} was trained: "
                f"{self.new_labelled_rows}.",
                "",
            ]
        lines.append(f"**Why:** {self.reason}")
        if self.retrain_run_id:
            lines += ["", f"**Retraining run:** {self.retrain_run_id}"]
        return "\n".join(lines) + "\n"

"""The refinement loop so far, as a short table: what each version scored where, and what each monitor
decision saw.

Everything comes from records the loop keeps: each registered version's evaluation (challenger and the
champion it replaced, scored on the same test rows) and the trigger log's decisions with their signals.
``refinery loop-summary`` prints it; the demo ends with it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.data.sources import DOMAIN_SLICE, ESTABLISHED, NEW

if TYPE_CHECKING:
    from refinery.config import RunConfig


@dataclass(frozen=True)
class VersionRow:
    """One registered version, scored against the champion it was judged against.

    Attributes:
        version: The version number.
        champion: The champion it was judged against (None for a first model).
        new_train_rows: New labelled rows it trained on.
        accuracy: Its accuracy by test domain (``all``, ``established``, ``new``).
        champion_accuracy: The champion's accuracy on the same rows, by domain.
        promoted: Whether it was promoted in the configured environment (carries its GitOps commit).
        gate: The gate's verdict tag.
    """

    version: str
    champion: str | None
    new_train_rows: int
    accuracy: dict[str, float]
    champion_accuracy: dict[str, float]
    promoted: bool
    gate: str


@dataclass(frozen=True)
class DecisionRow:
    """One monitor decision: the serving version, the window, the action and the signals that fired."""

    when: str
    serving: str | None
    window_rows: int
    action: str
    fired: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoopStory:
    """The loop so far: versions and monitor decisions, oldest first."""

    model_name: str
    versions: list[VersionRow]
    decisions: list[DecisionRow]

    def to_text(self) -> str:
        """Two small tables for a console."""

        def acc(scores: dict[str, float], key: str) -> str:
            return f"{scores[key]:.3f}" if key in scores else "-"

        lines = [
            f"{self.model_name}: accuracy on the test rows each version was judged on"
            " (champion it replaced in brackets)",
            f"  {'version':<8} {'new rows trained':>16} {'established':>17} {'new':>17}  gate / promoted",
        ]
        for v in self.versions:
            cells = []
            for key in (ESTABLISHED, NEW):
                # A run without new rows was tested on data.uri's rows alone: all of them established.
                column = "all" if key == ESTABLISHED and NEW not in v.accuracy else key
                ours, theirs = acc(v.accuracy, column), acc(v.champion_accuracy, column)
                cells.append(f"{ours} ({theirs})" if v.champion else ours)
            promoted = "promoted" if v.promoted else "not promoted"
            lines.append(
                f"  v{v.version:<7} {v.new_train_rows:>16} {cells[0]:>17} {cells[1]:>17}  {v.gate}; {promoted}"
            )
        lines += [
            "",
            "monitor decisions:",
            f"  {'serving':<8} {'window':>6}  {'action':<19} signals that fired",
        ]
        for d in self.decisions:
            fired = ", ".join(d.fired) or "none"
            lines.append(f"  v{d.serving or '?':<7} {d.window_rows:>6}  {d.action:<19} {fired}")
        return "\n".join(lines)


def _domain_accuracy(metrics: dict[str, Any]) -> dict[str, float]:
    scores = {"all": float(metrics["accuracy"])}
    for domain, score in metrics.get("slices", {}).get(DOMAIN_SLICE, {}).items():
        scores[str(domain)] = float(score["accuracy"])
    return scores


def loop_story(cfg: RunConfig) -> LoopStory:
    """Read the loop's records for ``cfg.registry.model_name``.

    Raises:
        RegistryError: The registry cannot be read.
        MonitoringError: The trigger log cannot be read.
    """
    from refinery.evaluation.evaluate import EVALUATION_FILE
    from refinery.monitoring.trigger_log import TriggerLog
    from refinery.registry.champions import GITOPS_COMMIT, recorded
    from refinery.registry.mlflow_registry import Registry
    from refinery.results import read_json

    registry = Registry(cfg.registry)
    # Promoted: in the configured environment (gitops.environment), the one the monitor watches.
    environment = cfg.gitops.environment
    versions = []
    with tempfile.TemporaryDirectory(prefix="refinery-story-") as tmp:
        for info in sorted(registry.versions(), key=lambda v: int(v.version)):
            folder = registry.download(info.version, "evaluation", Path(tmp) / info.version)
            evaluation = read_json(folder / EVALUATION_FILE)
            champion = evaluation.get("champion")
            versions.append(
                VersionRow(
                    version=info.version,
                    champion=evaluation.get("champion_version"),
                    new_train_rows=int(info.tags.get("new_train_rows", "0") or 0),
                    accuracy=_domain_accuracy(evaluation["challenger"]),
                    champion_accuracy=_domain_accuracy(champion) if champion else {},
                    promoted=bool(recorded(info, environment, GITOPS_COMMIT, legacy=True)),
                    gate=info.tags.get("gate", "?").split(":", 1)[0],
                )
            )
    decisions = []
    if cfg.monitoring.trigger_log:
        for record in TriggerLog(cfg.monitoring.trigger_log).decisions(cfg.registry.model_name):
            fired = [
                f"{s['name']} {s['value']:.3f} (threshold {s['threshold']:.3f})"
                for s in record.signals or []
                if s.get("fired") and s.get("value") is not None
            ]
            decisions.append(
                DecisionRow(
                    when=record.timestamp.isoformat(timespec="seconds"),
                    serving=record.champion_version,
                    window_rows=record.window_rows,
                    action=record.action,
                    fired=fired,
                )
            )
    return LoopStory(cfg.registry.model_name, versions, decisions)

"""The evaluate step's result: both models' metrics on the same test rows, as ``evaluation.json``.

:class:`EvaluationResult` is what the gate (:mod:`refinery.evaluation.gate`), the HTML report, the
registry and the model card read. It is a :class:`~refinery.results.Record`: written and read back by
walking its type hints, nested records included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from refinery.evaluation.metrics import ModelMetrics
from refinery.evaluation.significance import BootstrapResult, McNemarResult
from refinery.results import Record, load_result

EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class Comparison(Record):
    """Challenger against champion on the same rows: the statistics the gate's significance rules read.

    Attributes:
        bootstrap: The paired bootstrap of the macro-F1 difference.
        mcnemar: McNemar's test on the rows exactly one model gets right.
        on: Which test rows: ``all``, or ``new`` (the held-out new labelled rows).
        rows: How many rows were compared.
    """

    bootstrap: BootstrapResult
    mcnemar: McNemarResult
    on: str = "all"
    rows: int = 0


@dataclass(frozen=True)
class RetentionResult(Record):
    """Both models on the retention set (``data.retention_uri``), the check against forgetting."""

    uri: str
    n: int
    challenger: ModelMetrics
    champion: ModelMetrics | None = None


@dataclass(frozen=True)
class EvaluationResult(Record):
    """Challenger and champion metrics on the same test set.

    Attributes:
        labels: Declared labels, in class-index order (the confusion-matrix order).
        test_rows: Number of test rows both models scored.
        challenger: Metrics of the newly trained model.
        champion: Metrics of the current champion, or None when there is no champion yet.
        champion_version: Registry version of the champion that was scored, if any.
        comparison: Bootstrap interval and McNemar's test of challenger against champion (None
            without a champion, or with ``gate.significance.mode: off``).
        retention: Both models on the retention set, when ``data.retention_uri`` is set.
        no_change: Why the challenger is no change from the champion (the same weights, or the same
            prediction on every test row), or None when it differs.
    """

    labels: tuple[str, ...]
    test_rows: int
    challenger: ModelMetrics
    champion: ModelMetrics | None = None
    champion_version: str | None = None
    comparison: Comparison | None = None
    retention: RetentionResult | None = None
    no_change: str | None = None

    def metrics(self) -> dict[str, float]:
        """Headline numbers of both models, flat, for the step's KFP Metrics."""
        flat = {"test_rows": float(self.test_rows)}
        for role, m in (("challenger", self.challenger), ("champion", self.champion)):
            if m is not None:
                flat.update({f"{role}_{name}": value for name, value in m.headline().items()})
        if self.comparison is not None:
            flat["macro_f1_difference"] = self.comparison.bootstrap.difference
            flat["macro_f1_difference_low"] = self.comparison.bootstrap.low
            flat["macro_f1_difference_high"] = self.comparison.bootstrap.high
            flat["mcnemar_p_value"] = self.comparison.mcnemar.p_value
        if self.retention is not None:
            flat["retention_rows"] = float(self.retention.n)
            for role, m in (("challenger", self.retention.challenger), ("champion", self.retention.champion)):
                if m is not None:
                    flat[f"retention_{role}_macro_f1"] = m.macro_f1
                    flat[f"retention_{role}_accuracy"] = m.accuracy
        return flat

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationResult:
        """Read ``evaluation.json`` (or the directory holding it).

        Raises:
            RefineryError: The file is missing or is not an evaluation result.
        """
        return load_result(cls.from_dict, path, default_name=EVALUATION_FILE, what="evaluation result")

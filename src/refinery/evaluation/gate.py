"""The promotion gate: may the challenger replace the champion?

Two rules, both on test macro-F1: an absolute floor (``gate.min_macro_f1``) and, when a champion
exists, no regression beyond ``gate.max_regression`` against the champion scored on the same test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.evaluation.evaluate import EvaluationResult
from refinery.results import load_result, to_jsonable, write_json

if TYPE_CHECKING:
    from refinery.config import GateConfig

GATE_FILE = "decision.json"

# Macro-F1 values are ratios of small integers; a threshold computed as champion - tolerance can land a
# few ulps away from an equal observed value, which must still count as "not worse".
_EPSILON = 1e-9


@dataclass(frozen=True)
class RuleResult:
    """One gate rule's outcome.

    Attributes:
        name: Rule identifier (``min_macro_f1`` or ``no_regression_vs_champion``).
        observed: The challenger's value the rule looked at.
        threshold: The smallest value that passes.
        passed: Whether ``observed >= threshold``.
        detail: One sentence a person can read in a pipeline log.
    """

    name: str
    observed: float
    threshold: float
    passed: bool
    detail: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleResult:
        """Rebuild a rule result from its dict form."""
        return cls(
            name=str(data["name"]),
            observed=float(data["observed"]),
            threshold=float(data["threshold"]),
            passed=bool(data["passed"]),
            detail=str(data["detail"]),
        )


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict.

    Attributes:
        passed: True when every rule passed.
        rules: Each rule's outcome, in the order evaluated.
        reasons: Why the decision came out as it did: the failed rules' details when rejected,
            every rule's detail when accepted.
    """

    passed: bool
    rules: list[RuleResult]
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return to_jsonable(self)

    def write_json(self, path: str | Path) -> Path:
        """Write the decision as JSON, atomically."""
        return write_json(self, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        """Rebuild a decision from :meth:`to_dict` output."""
        return cls(
            passed=bool(data["passed"]),
            rules=[RuleResult.from_dict(r) for r in data["rules"]],
            reasons=[str(r) for r in data["reasons"]],
        )

    @classmethod
    def from_json(cls, path: str | Path) -> GateDecision:
        """Read a decision written by :meth:`write_json` (or the directory holding ``decision.json``).

        Raises:
            RefineryError: The file is missing or is not a gate decision.
        """
        return load_result(cls.from_dict, path, default_name=GATE_FILE, what="gate decision")

    def to_markdown(self) -> str:
        """A Markdown summary: the decision in the heading, then one table row per rule."""
        verdict = (
            "PASSED — the challenger may be promoted" if self.passed else "REJECTED — the champion stays"
        )
        lines = [
            f"## Promotion gate: {verdict}",
            "",
            "| rule | observed | threshold | result |",
            "| --- | ---: | ---: | --- |",
        ]
        for rule in self.rules:
            result = "pass" if rule.passed else "**FAIL**"
            lines.append(f"| {rule.name} | {rule.observed:.4f} | {rule.threshold:.4f} | {result} |")
        lines.append("")
        lines.extend(f"- {reason}" for reason in self.reasons)
        return "\n".join(lines) + "\n"


def decide(gate: GateConfig, evaluation: EvaluationResult) -> GateDecision:
    """Apply the promotion rules to an evaluation.

    Args:
        gate: The ``gate`` section of the run configuration.
        evaluation: Challenger (and champion) metrics on one test set.

    Returns:
        The GateDecision; ``passed`` is True only when every rule passed.
    """
    challenger_f1 = evaluation.challenger.macro_f1
    rules: list[RuleResult] = []

    floor = gate.min_macro_f1
    floor_passed = challenger_f1 + _EPSILON >= floor
    rules.append(
        RuleResult(
            name="min_macro_f1",
            observed=challenger_f1,
            threshold=floor,
            passed=floor_passed,
            detail=(
                f"challenger macro-F1 {challenger_f1:.4f} "
                f"{'meets' if floor_passed else 'is below'} the floor gate.min_macro_f1={floor:.4f}"
            ),
        )
    )

    if evaluation.champion is not None:
        champion_f1 = evaluation.champion.macro_f1
        who = f"champion v{evaluation.champion_version}" if evaluation.champion_version else "the champion"
        threshold = max(0.0, champion_f1 - gate.max_regression)
        passed = challenger_f1 + _EPSILON >= threshold
        verb = "is within" if passed else "falls more than"
        rules.append(
            RuleResult(
                name="no_regression_vs_champion",
                observed=challenger_f1,
                threshold=threshold,
                passed=passed,
                detail=(
                    f"challenger macro-F1 {challenger_f1:.4f} {verb} gate.max_regression={gate.max_regression:.4f} "
                    f"{'of' if passed else 'below'} {who}'s {champion_f1:.4f} on the same test set"
                ),
            )
        )

    passed = all(rule.passed for rule in rules)
    reasons = [rule.detail for rule in rules if passed or not rule.passed]
    if evaluation.champion is None:
        reasons.append("no champion yet: the challenger is compared against the floor only")
    return GateDecision(passed=passed, rules=rules, reasons=reasons)

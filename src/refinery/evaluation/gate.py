"""The promotion gate: may the challenger replace the champion?

Every rule is configurable (``gate`` in the run configuration) and reported with what it observed,
what it required and whether that held:

- ``no_change``: a challenger whose weights hash the same as the champion's, or that predicts the
  champion's label on every test row, is refused before anything else: promoting it would publish a copy.
- ``min.<metric>`` / ``max.<metric>``: absolute limits on the challenger (macro-F1, accuracy, ROC-AUC,
  average precision; log loss, calibration error, latency). They are all a first model is judged by.
- ``max_regression.<metric>``: how much worse than the champion, scored on the same test rows, the
  challenger may be.
- ``significance``: a paired bootstrap interval of the challenger-minus-champion macro-F1 difference,
  and McNemar's test on the rows exactly one model gets right. ``not_worse`` rejects a challenger that
  is significantly worse; ``better`` accepts only one that is significantly better.
- ``slices``: per slice (a value of a ``data.slice_columns`` column, or a text-length bucket) with at
  least ``min_size`` test rows, no regression beyond ``max_regression``; smaller slices are noted.
- ``retention``: on ``data.retention_uri`` (an earlier domain), and on the ``established`` test rows
  when the run added new ones, no regression beyond ``max_regression``: the check against
  catastrophic forgetting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.config import LOWER_IS_BETTER, SERVING_METRICS
from refinery.data.sources import DOMAIN_SLICE, ESTABLISHED, NEW
from refinery.evaluation.result import EvaluationResult
from refinery.results import Record, load_result

if TYPE_CHECKING:
    from refinery.config import GateConfig
    from refinery.evaluation.metrics import ModelMetrics

GATE_FILE = "decision.json"
NO_CHANGE_RULE = "no_change"

# Scores are ratios of small integers; a threshold computed as champion - tolerance can land a few ulps
# away from an equal observed value, which must still count as "not worse".
_EPSILON = 1e-9


@dataclass(frozen=True)
class RuleResult(Record):
    """One gate rule's outcome.

    Attributes:
        name: Rule identifier, e.g. ``min.macro_f1``, ``max_regression.accuracy``, ``bootstrap.macro_f1``,
            ``mcnemar.accuracy``, ``slice.category=phones``, ``retention.macro_f1``.
        observed: The value the rule looked at (None when it could not be measured).
        threshold: The limit it was compared with.
        requirement: How observed must relate to threshold, as shown in reports (``>=``, ``<=``, ``>``,
            or for McNemar's test ``challenger ahead at p <`` / ``champion not ahead at p <``).
        passed: Whether the requirement held.
        detail: One sentence a person can read in a pipeline log.
    """

    name: str
    observed: float | None
    threshold: float
    requirement: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision(Record):
    """The gate's verdict: the typed object the pipeline's condition reads.

    Attributes:
        passed: True when every rule passed.
        rules: Each rule's outcome, in the order evaluated.
        reasons: Why the decision came out as it did: the failed rules' details when rejected,
            every rule's detail when accepted.
        notes: What was looked at but not judged (slices too small, a first model without champion).
    """

    passed: bool
    rules: list[RuleResult]
    reasons: list[str]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, path: str | Path) -> GateDecision:
        """Read a decision written by :meth:`write_json` (or the directory holding ``decision.json``).

        Raises:
            RefineryError: The file is missing or is not a gate decision.
        """
        return load_result(cls.from_dict, path, default_name=GATE_FILE, what="gate decision")

    @property
    def no_change(self) -> bool:
        """Whether the challenger is no change from the champion: the ``no_change`` rule failed."""
        return any(rule.name == NO_CHANGE_RULE and not rule.passed for rule in self.rules)

    def verdict(self) -> str:
        """``PASSED``, ``REJECTED`` or ``NO CHANGE``."""
        if self.no_change:
            return "NO CHANGE"
        return "PASSED" if self.passed else "REJECTED"

    def failed(self) -> list[RuleResult]:
        """The rules that did not hold."""
        return [rule for rule in self.rules if not rule.passed]

    def to_lines(self) -> list[str]:
        """The verdict and one line per rule, for a console."""
        lines = [f"gate: {self.verdict()}"]
        if self.no_change:
            lines.append(f"  {self.reasons[0]}")
        for rule in self.rules:
            mark = "ok " if rule.passed else "FAIL"
            observed = "not measured" if rule.observed is None else f"{rule.observed:.4f}"
            lines.append(
                f"  [{mark}] {rule.name}: {observed}, required {rule.requirement} {rule.threshold:.4f}"
            )
        return lines

    def to_markdown(self) -> str:
        """A Markdown summary: the decision in the heading, one table row per rule, then the reasons."""
        verdict = {
            "PASSED": "PASSED — the challenger may be promoted",
            "REJECTED": "REJECTED — the champion stays",
            "NO CHANGE": "NO CHANGE — the challenger is a copy of the champion, which stays",
        }[self.verdict()]
        lines = [
            f"## Promotion gate: {verdict}",
            "",
            "| rule | observed | required | result |",
            "| --- | ---: | --- | --- |",
        ]
        for rule in self.rules:
            result = "pass" if rule.passed else "**FAIL**"
            observed = f"{rule.observed:.4f}" if rule.observed is not None else "not measured"
            lines.append(f"| {rule.name} | {observed} | {rule.requirement} {rule.threshold:.4f} | {result} |")
        lines.append("")
        lines.extend(f"- {reason}" for reason in self.reasons)
        if self.notes:
            lines += ["", "Not judged:", ""]
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


def _compare(observed: float | None, requirement: str, threshold: float) -> bool:
    if observed is None:
        return False
    return {
        ">=": observed + _EPSILON >= threshold,
        "<=": observed - _EPSILON <= threshold,
        ">": observed > threshold,
    }[requirement]


def _rule(name: str, observed: float | None, requirement: str, threshold: float, detail: str) -> RuleResult:
    passed = _compare(observed, requirement, threshold)
    shown = f"{observed:.4f}" if observed is not None else "not measured"
    return RuleResult(
        name=name,
        observed=observed,
        threshold=threshold,
        requirement=requirement,
        passed=passed,
        detail=f"{detail}: {shown} {'meets' if passed else 'fails'} {requirement} {threshold:.4f}",
    )


def _absolute_rules(gate: GateConfig, challenger: ModelMetrics) -> list[RuleResult]:
    rules = [
        _rule(
            f"min.{metric}", challenger.value(metric), ">=", floor, f"challenger {metric} (gate.min.{metric})"
        )
        for metric, floor in gate.min.items()
    ]
    rules += [
        _rule(
            f"max.{metric}",
            challenger.value(metric),
            "<=",
            ceiling,
            f"challenger {metric} (gate.max.{metric})",
        )
        for metric, ceiling in gate.max.items()
        if metric not in SERVING_METRICS  # judged on the packaged Bento by refinery.packaging.check
    ]
    return rules


def _regression_rules(
    gate: GateConfig, challenger: ModelMetrics, champion: ModelMetrics, who: str
) -> list[RuleResult]:
    rules = []
    for metric, allowed in gate.max_regression.items():
        theirs = champion.value(metric)
        if theirs is None:
            rules.append(
                _rule(f"max_regression.{metric}", None, ">=", 0.0, f"{who}'s {metric} was not measured")
            )
            continue
        lower = metric in LOWER_IS_BETTER
        threshold = theirs + allowed if lower else max(0.0, theirs - allowed)
        rules.append(
            _rule(
                f"max_regression.{metric}",
                challenger.value(metric),
                "<=" if lower else ">=",
                threshold,
                f"challenger {metric} against {who}'s {theirs:.4f} with gate.max_regression.{metric}={allowed:g}",
            )
        )
    return rules


def _significance_rules(gate: GateConfig, evaluation: EvaluationResult, who: str) -> list[RuleResult]:
    significance = gate.significance
    comparison = evaluation.comparison
    if significance.mode == "off" or comparison is None:
        return []
    boot, test = comparison.bootstrap, comparison.mcnemar
    rows = f"the {comparison.rows} new test rows" if comparison.on == "new" else "the test rows"
    interval = (
        f"{boot.confidence:.0%} interval of challenger minus {who} macro-F1 on {rows} "
        f"[{boot.low:+.4f}, {boot.high:+.4f}] over {boot.resamples} paired resamples"
    )
    counts = (
        f"McNemar ({test.method}): challenger alone right on {test.b} rows, {who} alone on {test.c}, "
        f"p={test.p_value:.4g}"
    )
    if significance.mode == "better":  # the interval above 0, and a McNemar win
        f1_passed, f1_observed, f1_requirement = boot.low > 0, boot.low, ">"
        f1_says = "lies above 0" if f1_passed else "does not exclude 0"
        test_passed = test.b > test.c and test.p_value < significance.alpha
        test_requirement = "challenger ahead at p <"
        test_says = "significantly better" if test_passed else "not significantly better"
    else:  # not_worse: neither the interval below 0 nor a McNemar loss
        f1_passed, f1_observed, f1_requirement = boot.high >= 0, boot.high, ">="
        f1_says = "reaches 0 or above" if f1_passed else "lies below 0, significantly worse"
        test_passed = not (test.c > test.b and test.p_value < significance.alpha)
        test_requirement = "champion not ahead at p <"
        test_says = "not significantly worse" if test_passed else "significantly worse"
    mode = f"gate.significance.mode={significance.mode}"
    return [
        RuleResult(
            name="bootstrap.macro_f1",
            observed=f1_observed,
            threshold=0.0,
            requirement=f1_requirement,
            passed=f1_passed,
            detail=f"{interval}: {f1_says} ({mode})",
        ),
        RuleResult(
            name="mcnemar.accuracy",
            observed=test.p_value,
            threshold=significance.alpha,
            requirement=test_requirement,
            passed=test_passed,
            detail=f"{counts}: {test_says} at alpha={significance.alpha:g} ({mode})",
        ),
    ]


def _slice_rules(
    gate: GateConfig, challenger: ModelMetrics, champion: ModelMetrics, who: str
) -> tuple[list[RuleResult], list[str]]:
    rules: list[RuleResult] = []
    notes: list[str] = []
    config = gate.slices
    if not config.enabled:
        return rules, notes
    metric = config.metric
    for column, scores in challenger.slices.items():
        for value, score in scores.items():
            name = f"slice.{column}={value}"
            theirs = champion.slices.get(column, {}).get(value)
            if theirs is None:
                notes.append(f"{name}: {who} has no score for it")
                continue
            if score.n < config.min_size:
                notes.append(f"{name}: {score.n} test rows, below gate.slices.min_size={config.min_size}")
                continue
            reference = getattr(theirs, metric)
            rules.append(
                _rule(
                    name,
                    getattr(score, metric),
                    ">=",
                    max(0.0, reference - config.max_regression),
                    f"challenger {metric} on slice {column}={value} ({score.n} rows) against {who}'s"
                    f" {reference:.4f} with gate.slices.max_regression={config.max_regression:g}",
                )
            )
    return rules, notes


def _retention_rule(gate: GateConfig, evaluation: EvaluationResult, who: str) -> list[RuleResult]:
    config = gate.retention

    def kept_up(name: str, ours: float | None, theirs: float, where: str) -> RuleResult:
        return _rule(
            f"{name}.{config.metric}",
            ours,
            ">=",
            max(0.0, theirs - config.max_regression),
            f"challenger {config.metric} on {where} against {who}'s {theirs:.4f} with"
            f" gate.retention.max_regression={config.max_regression:g}",
        )

    rules = []
    retention = evaluation.retention
    if retention is not None and retention.champion is not None:
        reference = retention.champion.value(config.metric)
        assert reference is not None  # accuracy and macro-F1 are always measured
        rules.append(
            kept_up(
                "retention",
                retention.challenger.value(config.metric),
                reference,
                f"the retention set ({retention.n} rows)",
            )
        )
    # With new labelled rows in the test set, its established rows are the retention check too.
    domains = evaluation.challenger.slices.get(DOMAIN_SLICE, {})
    ours = domains.get(ESTABLISHED)
    theirs = (
        evaluation.champion.slices.get(DOMAIN_SLICE, {}).get(ESTABLISHED) if evaluation.champion else None
    )
    if ours is not None and theirs is not None and NEW in domains:
        rules.append(
            kept_up(
                "established",
                getattr(ours, config.metric),
                getattr(theirs, config.metric),
                f"the established test rows ({ours.n})",
            )
        )
    return rules


def _no_change_rule(evaluation: EvaluationResult) -> RuleResult:
    reason = evaluation.no_change
    return RuleResult(
        name=NO_CHANGE_RULE,
        observed=1.0 if reason else 0.0,
        threshold=0.0,
        requirement="<=",
        passed=reason is None,
        detail=f"no change: {reason}; nothing to register, package or promote"
        if reason
        else "the challenger differs from the champion (weights and test-set predictions)",
    )


def decide(gate: GateConfig, evaluation: EvaluationResult) -> GateDecision:
    """Apply the promotion rules to an evaluation.

    Args:
        gate: The ``gate`` section of the run configuration.
        evaluation: Challenger (and champion) metrics on one test set, their comparison, slices and
            retention-set scores.

    Returns:
        The GateDecision; ``passed`` is True only when every rule passed.
    """
    challenger, champion = evaluation.challenger, evaluation.champion
    rules = _absolute_rules(gate, challenger)
    notes: list[str] = []
    if champion is None:
        notes.append(
            "no champion yet: the challenger is judged by the absolute limits (gate.min, gate.max) alone"
        )
    else:
        who = f"champion v{evaluation.champion_version}" if evaluation.champion_version else "the champion"
        rules.insert(0, _no_change_rule(evaluation))
        rules += _regression_rules(gate, challenger, champion, who)
        rules += _significance_rules(gate, evaluation, who)
        slice_rules, notes = _slice_rules(gate, challenger, champion, who)
        rules += slice_rules
        rules += _retention_rule(gate, evaluation, who)
    passed = all(rule.passed for rule in rules)
    reasons = [rule.detail for rule in rules if passed or not rule.passed]
    decision = GateDecision(passed=passed, rules=rules, reasons=reasons, notes=notes)
    if decision.no_change:  # a copy: the other rules' verdicts do not matter
        return GateDecision(passed=False, rules=rules, reasons=[rules[0].detail], notes=notes)
    return decision

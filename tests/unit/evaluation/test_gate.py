"""The promotion gate on constructed evaluation results."""

from __future__ import annotations

from pathlib import Path

import pytest

from refinery.config import GateConfig
from refinery.errors import RefineryError
from refinery.evaluation.evaluate import EvaluationResult
from refinery.evaluation.gate import GateDecision, decide
from refinery.evaluation.metrics import ModelMetrics

GATE = GateConfig(min_macro_f1=0.7, max_regression=0.02)


def _metrics(macro_f1: float) -> ModelMetrics:
    return ModelMetrics(
        accuracy=macro_f1,
        macro_f1=macro_f1,
        per_class={
            "negative": {"precision": macro_f1, "recall": macro_f1, "f1": macro_f1, "support": 50},
            "positive": {"precision": macro_f1, "recall": macro_f1, "f1": macro_f1, "support": 50},
        },
        confusion_matrix=[[40, 10], [10, 40]],
        n=100,
        labels=("negative", "positive"),
    )


def _evaluation(
    challenger: float, champion: float | None = None, version: str | None = "3"
) -> EvaluationResult:
    return EvaluationResult(
        labels=("negative", "positive"),
        test_rows=100,
        challenger=_metrics(challenger),
        champion=None if champion is None else _metrics(champion),
        champion_version=None if champion is None else version,
    )


def test_first_model_above_the_floor_passes() -> None:
    decision = decide(GATE, _evaluation(0.82))

    assert decision.passed
    assert [r.name for r in decision.rules] == ["min_macro_f1"]
    rule = decision.rules[0]
    assert (rule.observed, rule.threshold, rule.passed) == (0.82, 0.7, True)
    assert any("no champion yet" in reason for reason in decision.reasons)


def test_first_model_below_the_floor_fails() -> None:
    decision = decide(GATE, _evaluation(0.55))

    assert not decision.passed
    assert decision.rules[0].passed is False
    assert "is below the floor gate.min_macro_f1=0.7000" in decision.reasons[0]


def test_challenger_worse_than_champion_beyond_tolerance_fails() -> None:
    decision = decide(GATE, _evaluation(0.75, champion=0.80))

    assert not decision.passed
    by_name = {r.name: r for r in decision.rules}
    assert by_name["min_macro_f1"].passed
    regression = by_name["no_regression_vs_champion"]
    assert regression.passed is False
    assert regression.observed == pytest.approx(0.75)
    assert regression.threshold == pytest.approx(0.78)
    assert decision.reasons == [regression.detail]
    assert "champion v3" in regression.detail
    assert "0.8000" in regression.detail


def test_challenger_slightly_worse_within_tolerance_passes() -> None:
    decision = decide(GATE, _evaluation(0.79, champion=0.80))

    assert decision.passed
    assert len(decision.rules) == 2
    assert len(decision.reasons) == 2


def test_challenger_exactly_at_the_tolerance_boundary_passes() -> None:
    # 0.80 - 0.02 computed in floating point is 0.7800000000000001; equal must still pass.
    assert decide(GATE, _evaluation(0.78, champion=0.80)).passed


def test_better_challenger_failing_the_floor_still_fails() -> None:
    decision = decide(GATE, _evaluation(0.65, champion=0.60))

    assert not decision.passed
    assert [r.passed for r in decision.rules] == [False, True]
    assert len(decision.reasons) == 1


def test_markdown_names_every_rule_value_and_the_decision() -> None:
    decision = decide(GATE, _evaluation(0.75, champion=0.80))
    md = decision.to_markdown()

    assert md.startswith("## Promotion gate: REJECTED")
    assert "| rule | observed | threshold | result |" in md
    assert "| min_macro_f1 | 0.7500 | 0.7000 | pass |" in md
    assert "| no_regression_vs_champion | 0.7500 | 0.7800 | **FAIL** |" in md
    assert "PASSED" in decide(GATE, _evaluation(0.9)).to_markdown().splitlines()[0]


def test_decision_and_evaluation_round_trip_through_json(tmp_path: Path) -> None:
    evaluation = _evaluation(0.75, champion=0.80)
    decision = decide(GATE, evaluation)

    decision.write_json(tmp_path / "decision.json")
    evaluation.write_json(tmp_path / "evaluation.json")

    assert GateDecision.from_json(tmp_path / "decision.json") == decision
    assert GateDecision.from_json(tmp_path) == decision
    assert EvaluationResult.from_json(tmp_path) == evaluation
    assert EvaluationResult.from_json(tmp_path / "evaluation.json").champion_version == "3"


def test_reading_a_missing_or_foreign_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RefineryError, match=r"gate decision not found: .*nothing\.json"):
        GateDecision.from_json(tmp_path / "nothing.json")
    (tmp_path / "evaluation.json").write_text('{"labels": ["a"]}')
    with pytest.raises(RefineryError, match=r"evaluation\.json is not an evaluation result"):
        EvaluationResult.from_json(tmp_path / "evaluation.json")

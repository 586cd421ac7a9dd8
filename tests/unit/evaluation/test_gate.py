"""The promotion gate on constructed evaluations: absolute limits, regression against the champion,
significance (paired bootstrap, McNemar), slices and the retention set."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from refinery.config import GateConfig, RunConfig, SignificanceConfig, parse_config, resolve
from refinery.errors import RefineryError
from refinery.evaluation.gate import GateDecision, decide
from refinery.evaluation.metrics import ModelMetrics
from refinery.evaluation.result import EvaluationResult, RetentionResult
from refinery.evaluation.scoring import compare, score

LABELS = ("negative", "positive")


def config(tmp_path: Path, **gate: Any) -> RunConfig:
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {"uri": str(tmp_path / "data.csv"), "labels": list(LABELS), "slice_columns": ["category"]},
        "model": {"base": str(tmp_path / "model")},
        "evaluation": {"length_buckets": [1000]},  # one length bucket: slices come from category alone
        "gate": gate,
    }
    return resolve(parse_config(tree), tmp_path)


def rows(n: int, category: str = "phones") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"review {i}" for i in range(n)],
            "label": [LABELS[i % 2] for i in range(n)],
            "category": category,
        }
    )


def probabilities(frame: pd.DataFrame, right: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    """Class probabilities that put ``confidence`` on the true label where ``right``, else on the other."""
    true_idx = frame["label"].map({label: i for i, label in enumerate(LABELS)}).to_numpy()
    predicted = np.where(right, true_idx, 1 - true_idx)
    out = np.full((len(frame), 2), 1 - confidence)
    out[np.arange(len(frame)), predicted] = confidence
    return out


def right_share(n: int, share: float, seed: int) -> np.ndarray:
    """A seeded boolean mask with exactly ``round(n * share)`` True."""
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, size=round(n * share), replace=False)] = True
    return mask


def evaluation(
    cfg: RunConfig,
    frame: pd.DataFrame,
    ours: np.ndarray,
    theirs: np.ndarray | None,
    retention: RetentionResult | None = None,
) -> EvaluationResult:
    challenger = probabilities(frame, ours)
    champion = probabilities(frame, theirs) if theirs is not None else None
    return EvaluationResult(
        labels=LABELS,
        test_rows=len(frame),
        challenger=score(cfg, frame, challenger, slice_columns=["category"]),
        champion=score(cfg, frame, champion, slice_columns=["category"]) if champion is not None else None,
        champion_version="3" if champion is not None else None,
        comparison=compare(cfg, frame, challenger, champion) if champion is not None else None,
        retention=retention,
    )


def by_name(decision: GateDecision) -> dict[str, Any]:
    return {rule.name: rule for rule in decision.rules}


# -- absolute limits and the first model -----------------------------------------------------------------


def test_first_model_is_judged_by_the_absolute_limits_alone(tmp_path: Path) -> None:
    cfg = config(tmp_path, min={"macro_f1": 0.7, "accuracy": 0.7}, max={"ece": 0.3})
    frame = rows(200)
    decision = decide(cfg.gate, evaluation(cfg, frame, right_share(200, 0.8, 1), None))
    assert decision.passed
    assert list(by_name(decision)) == ["min.macro_f1", "min.accuracy", "max.ece"]
    assert "no champion yet" in decision.notes[0]

    low = decide(cfg.gate, evaluation(cfg, frame, right_share(200, 0.6, 1), None))
    assert not low.passed
    assert [r.name for r in low.failed()] == ["min.macro_f1", "min.accuracy"]
    assert "challenger accuracy (gate.min.accuracy): 0.6000 fails >= 0.7000" in low.reasons[1]


def test_a_limit_on_a_metric_that_was_not_measured_fails_and_says_so(tmp_path: Path) -> None:
    cfg = config(tmp_path, max={"p95_latency_ms": 50})
    decision = decide(cfg.gate, evaluation(cfg, rows(100), right_share(100, 0.9, 1), None))
    assert not decision.passed
    (rule,) = [r for r in decision.rules if r.name == "max.p95_latency_ms"]
    assert rule.observed is None and "not measured" in rule.detail


def test_calibration_error_limit(tmp_path: Path) -> None:
    # 80% right at 0.99 confidence: the calibration error is 0.19.
    cfg = config(tmp_path, max={"ece": 0.1})
    frame = rows(200)
    result = EvaluationResult(
        labels=LABELS,
        test_rows=200,
        challenger=score(cfg, frame, probabilities(frame, right_share(200, 0.8, 1), confidence=0.99)),
    )
    rule = by_name(decide(cfg.gate, result))["max.ece"]
    assert rule.observed == pytest.approx(0.19) and not rule.passed


# -- against the champion ----------------------------------------------------------------------------------


def test_regression_beyond_the_allowed_margin_fails(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_regression={"macro_f1": 0.02, "log_loss": 0.5}, significance={"mode": "off"})
    frame = rows(400)
    within = decide(cfg.gate, evaluation(cfg, frame, right_share(400, 0.89, 1), right_share(400, 0.90, 2)))
    assert within.passed
    beyond = decide(cfg.gate, evaluation(cfg, frame, right_share(400, 0.85, 1), right_share(400, 0.90, 2)))
    assert [r.name for r in beyond.failed()] == ["max_regression.macro_f1"]
    assert "against champion v3's 0.9000 with gate.max_regression.macro_f1=0.02" in beyond.reasons[0]
    # log loss: lower is better, so the challenger may be at most champion + 0.5.
    rule = by_name(beyond)["max_regression.log_loss"]
    assert rule.requirement == "<=" and rule.threshold == pytest.approx(
        by_name(within)["max_regression.log_loss"].threshold
    )


def test_a_gain_inside_the_bootstrap_noise_is_not_significantly_better_but_not_worse(tmp_path: Path) -> None:
    frame = rows(1000)
    # 86% against 85.5% right, each model's mistakes on different rows: a half-point gain.
    ours, theirs = right_share(1000, 0.86, 1), right_share(1000, 0.855, 2)
    better = config(tmp_path, significance={"mode": "better"})
    rejected = decide(better.gate, evaluation(better, frame, ours, theirs))
    assert not rejected.passed
    assert {r.name for r in rejected.failed()} == {"bootstrap.macro_f1", "mcnemar.accuracy"}
    assert "does not exclude 0" in by_name(rejected)["bootstrap.macro_f1"].detail

    not_worse = config(tmp_path, significance={"mode": "not_worse"})
    accepted = decide(not_worse.gate, evaluation(not_worse, frame, ours, theirs))
    assert accepted.passed, accepted.reasons


def test_a_clear_gain_is_significantly_better(tmp_path: Path) -> None:
    cfg = config(tmp_path, significance={"mode": "better"})
    decision = decide(
        cfg.gate, evaluation(cfg, rows(1000), right_share(1000, 0.95, 1), right_share(1000, 0.80, 2))
    )
    assert decision.passed
    assert by_name(decision)["bootstrap.macro_f1"].observed > 0
    assert by_name(decision)["mcnemar.accuracy"].observed < 0.05


def test_a_significantly_worse_challenger_fails_not_worse_mode(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        max_regression={"macro_f1": 0.2},
        significance={"mode": "not_worse"},
        slices={"enabled": False},
    )
    decision = decide(
        cfg.gate, evaluation(cfg, rows(1000), right_share(1000, 0.80, 1), right_share(1000, 0.90, 2))
    )
    assert {r.name for r in decision.failed()} == {"bootstrap.macro_f1", "mcnemar.accuracy"}
    assert "significantly worse" in by_name(decision)["mcnemar.accuracy"].detail


def test_a_regression_on_one_slice_is_rejected_and_named(tmp_path: Path) -> None:
    cfg = config(tmp_path, significance={"mode": "off"}, slices={"min_size": 50, "max_regression": 0.05})
    phones, laptops, tiny = rows(400, "phones"), rows(100, "laptops"), rows(20, "tablets")
    frame = pd.concat([phones, laptops, tiny], ignore_index=True)
    # Overall better (phones 95% vs 85%), but laptops 70% against the champion's 90%.
    ours = np.concatenate([right_share(400, 0.95, 1), right_share(100, 0.70, 2), right_share(20, 0.5, 3)])
    theirs = np.concatenate([right_share(400, 0.85, 4), right_share(100, 0.90, 5), right_share(20, 0.9, 6)])
    decision = decide(cfg.gate, evaluation(cfg, frame, ours, theirs))
    assert not decision.passed
    assert [r.name for r in decision.failed()] == ["slice.category=laptops"]
    assert by_name(decision)["slice.category=phones"].passed
    assert "slice category=laptops (100 rows)" in decision.reasons[0]
    assert any(
        "slice.category=tablets: 20 test rows, below gate.slices.min_size=50" in n for n in decision.notes
    )
    assert "slice.category=laptops" in decision.to_markdown() and "**FAIL**" in decision.to_markdown()


def test_forgetting_the_retention_set_is_rejected(tmp_path: Path) -> None:
    cfg = config(tmp_path, significance={"mode": "off"}, retention={"max_regression": 0.01})
    frame, kept = rows(200), rows(300, "earlier")
    retention = RetentionResult(
        uri="earlier.csv",
        n=300,
        challenger=score(cfg, kept, probabilities(kept, right_share(300, 0.75, 1))),
        champion=score(cfg, kept, probabilities(kept, right_share(300, 0.90, 2))),
    )
    decision = decide(
        cfg.gate, evaluation(cfg, frame, right_share(200, 0.95, 3), right_share(200, 0.9, 4), retention)
    )
    assert [r.name for r in decision.failed()] == ["retention.macro_f1"]
    assert "on the retention set (300 rows)" in decision.reasons[0]


# -- configuration, reports, files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"min": {"log_loss": 0.5}}, "min.log_loss: min takes accuracy, macro_f1"),
        ({"max": {"macro_f1": 0.5}}, "max.macro_f1: min takes"),
        ({"min": {"macro_f1": 1.5}}, "min.macro_f1: out of range"),
        ({"max_regression": {"accuracy": -0.1}}, "max_regression.accuracy: out of range"),
        ({"significance": {"mode": "maybe"}}, "significance.mode"),
    ],
)
def test_bad_gate_settings_are_named(gate: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GateConfig.model_validate(gate)


def test_markdown_names_every_rule_value_and_the_decision(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    gate = cfg.gate.model_copy(update={"significance": SignificanceConfig(mode="not_worse")})
    decision = decide(gate, evaluation(cfg, rows(200), right_share(200, 0.9, 1), right_share(200, 0.9, 1)))
    md = decision.to_markdown()
    assert md.startswith("## Promotion gate: PASSED")
    observed = next(r.observed for r in decision.rules if r.name == "min.macro_f1")
    assert f"| min.macro_f1 | {observed:.4f} | >= 0.7000 | pass |" in md
    assert "| bootstrap.macro_f1 | 0.0000 | >= 0.0000 | pass |" in md
    # The default mode, better, refuses a challenger that is only as good.
    assert (
        md
        != decide(
            cfg.gate, evaluation(cfg, rows(200), right_share(200, 0.9, 1), right_share(200, 0.9, 1))
        ).to_markdown()
    )


def test_decision_and_evaluation_round_trip_through_json(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    frame = rows(200)
    result = evaluation(
        cfg,
        frame,
        right_share(200, 0.9, 1),
        right_share(200, 0.85, 2),
        RetentionResult(
            uri="x.csv", n=200, challenger=score(cfg, frame, probabilities(frame, right_share(200, 0.8, 3)))
        ),
    )
    result.write_json(tmp_path / "evaluation.json")
    assert EvaluationResult.from_json(tmp_path / "evaluation.json") == result
    decision = decide(cfg.gate, result)
    decision.write_json(tmp_path / "decision.json")
    assert GateDecision.from_json(tmp_path) == decision
    assert (
        isinstance(result.challenger, ModelMetrics)
        and result.challenger.slices["category"]["phones"].n == 200
    )


def test_reading_a_missing_or_foreign_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RefineryError, match=r"gate decision not found: .*nothing\.json"):
        GateDecision.from_json(tmp_path / "nothing.json")
    (tmp_path / "evaluation.json").write_text('{"labels": ["a"]}')
    with pytest.raises(RefineryError, match=r"evaluation\.json is not an evaluation result"):
        EvaluationResult.from_json(tmp_path / "evaluation.json")


# -- new labelled rows: the `new` and `established` test sets, and copies ---------------------------------


def two_domains(established: int, new: int) -> pd.DataFrame:
    frame = pd.concat(
        [rows(established).assign(domain="established"), rows(new).assign(domain="new")], ignore_index=True
    )
    frame["text"] = [f"review {i}" for i in range(len(frame))]
    return frame


def improved(mask: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``mask`` with wrong rows turned right until ``share`` of them are right."""
    out = mask.copy()
    wrong = np.flatnonzero(~out)
    extra = round(len(out) * share) - int(out.sum())
    out[np.random.default_rng(seed).choice(wrong, size=extra, replace=False)] = True
    return out


def domain_evaluation(
    cfg: RunConfig, frame: pd.DataFrame, ours: np.ndarray, theirs: np.ndarray, no_change: str | None = None
) -> EvaluationResult:
    challenger, champion = probabilities(frame, ours), probabilities(frame, theirs)
    columns = ["category", "domain"]
    return EvaluationResult(
        labels=LABELS,
        test_rows=len(frame),
        challenger=score(cfg, frame, challenger, slice_columns=columns),
        champion=score(cfg, frame, champion, slice_columns=columns),
        champion_version="3",
        comparison=compare(cfg, frame, challenger, champion),
        no_change=no_change,
    )


def test_a_copy_is_refused_as_no_change_whatever_else_holds(tmp_path: Path) -> None:
    cfg = config(tmp_path, significance={"mode": "off"})
    frame = rows(200)
    same = right_share(200, 0.9, 1)
    result = replace(
        evaluation(cfg, frame, same, same),
        no_change="the challenger's weights hash the same as champion v3's (sha256 0123456789ab)",
    )
    decision = decide(cfg.gate, result)
    assert not decision.passed and decision.no_change
    assert decision.rules[0].name == "no_change" and not decision.rules[0].passed
    assert decision.reasons == [
        "no change: the challenger's weights hash the same as champion v3's (sha256 0123456789ab);"
        " nothing to register, package or promote"
    ]
    assert decision.to_lines()[0] == "gate: NO CHANGE"
    assert GateDecision.from_dict(decision.to_dict()) == decision


def test_new_rows_no_better_than_the_champion_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    frame = two_domains(400, 150)
    established = right_share(400, 0.9, 1)
    new = right_share(150, 0.8, 2)
    ours = np.concatenate([established, improved(new, 0.82, 3)])
    theirs = np.concatenate([established, new])
    result = domain_evaluation(cfg, frame, ours, theirs)
    assert result.comparison is not None
    assert (result.comparison.on, result.comparison.rows) == ("new", 150)
    decision = decide(cfg.gate, result)
    assert not decision.passed and not decision.no_change
    failed = {rule.name for rule in decision.failed()}
    assert "mcnemar.accuracy" in failed
    assert "on the 150 new test rows" in by_name(decision)["bootstrap.macro_f1"].detail


def test_better_on_new_rows_holding_the_established_ones_passes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    frame = two_domains(400, 150)
    established = right_share(400, 0.9, 1)
    new = right_share(150, 0.7, 2)
    decision = decide(
        cfg.gate,
        domain_evaluation(
            cfg,
            frame,
            np.concatenate([established, improved(new, 0.95, 3)]),
            np.concatenate([established, new]),
        ),
    )
    assert decision.passed, decision.reasons
    rules = by_name(decision)
    assert rules["mcnemar.accuracy"].passed and rules["bootstrap.macro_f1"].observed > 0
    assert rules["established.macro_f1"].passed
    assert {"slice.domain=new", "slice.domain=established"} <= set(rules)


def test_better_on_new_rows_but_forgetting_the_established_ones_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    frame = two_domains(400, 150)
    theirs_established = right_share(400, 0.92, 1)
    ours_established = theirs_established.copy()
    ours_established[np.flatnonzero(theirs_established)[:20]] = False  # 5 points worse
    new = right_share(150, 0.7, 2)
    decision = decide(
        cfg.gate,
        domain_evaluation(
            cfg,
            frame,
            np.concatenate([ours_established, improved(new, 0.95, 3)]),
            np.concatenate([theirs_established, new]),
        ),
    )
    assert not decision.passed
    assert "established.macro_f1" in {rule.name for rule in decision.failed()}
    assert "established test rows (400)" in by_name(decision)["established.macro_f1"].detail

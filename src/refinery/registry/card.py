"""The model card of a registered version: what it is for, what it learned from, how it scored, why it
was let through, and where it falls short. Markdown, logged with the version as ``model_card.md`` and set
as the version's description in the registry (the MLflow UI renders it). The register step
(:func:`refinery.release.register.register_model`) writes it.

The card renders an evaluation and a gate decision, so their types are imported for annotations only:
the registry imports no stage at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.evaluation.gate import GateDecision
    from refinery.evaluation.result import EvaluationResult

CARD_FILE = "model_card.md"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def model_card(
    cfg: RunConfig,
    tags: Mapping[str, str],
    evaluation: EvaluationResult,
    decision: GateDecision | None,
    prepared: Mapping[str, Any],
) -> str:
    """The card's Markdown.

    Args:
        cfg: The run configuration (task, labels, base model, training settings).
        tags: The version's lineage tags (data URIs and hashes, config hash, git sha, pipeline run, image).
        evaluation: Test-set scores of the challenger (and the champion it was compared with).
        decision: The gate's decision, when the gate ran.
        prepared: ``prepared.json`` of the training data (rows per split, label counts).
    """
    labels = ", ".join(f"`{label}`" for label in cfg.data.labels)
    lines = [
        f"# {cfg.registry.model_name}",
        "",
        "## Intended use",
        "",
        f"Text classification into {labels}, fine-tuned from `{cfg.model.base}` by refinery. Inputs are single"
        f" texts of up to {cfg.model.max_length} tokens (longer ones are truncated). It is meant for texts like"
        " its training data (below); the slices and the retention set show how it does elsewhere.",
        *_data(tags, prepared),
        *_metrics(evaluation),
        *_slices(evaluation),
        *_retention(evaluation),
        *_gate(decision),
        *_lineage(tags),
        *_limitations(cfg, evaluation, labels),
    ]
    return "\n".join(lines) + "\n"


def _data(tags: Mapping[str, str], prepared: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Data", "", "| | |", "|---|---|"]
    for key in sorted(k for k in tags if k.endswith(("data_uri", "data_sha256"))):
        lines.append(f"| {key} | `{_cell(tags[key])}` |")
    sizes = prepared.get("split_sizes") or {}
    if sizes:
        lines.append(f"| rows per split | {', '.join(f'{k} {v}' for k, v in sizes.items())} |")
    counts = (prepared.get("split_label_counts") or {}).get("train") or {}
    if counts:
        lines.append(f"| training labels | {', '.join(f'{_cell(k)} {v}' for k, v in counts.items())} |")
    return lines


def _metrics(evaluation: EvaluationResult) -> list[str]:
    lines = ["", "## Metrics (test set)", ""]
    champion = evaluation.champion
    header = "| metric | this version |" + (f" champion v{evaluation.champion_version} |" if champion else "")
    lines += [header, "|---|---|" + ("---|" if champion else "")]
    theirs = champion.headline() if champion else {}
    for metric, value in evaluation.challenger.headline().items():
        row = f"| {metric} | {_num(value)} |"
        if champion:
            row += f" {_num(theirs.get(metric))} |"
        lines.append(row)
    lines.append(f"\n{evaluation.test_rows} test rows.")
    if evaluation.comparison is not None:
        boot = evaluation.comparison.bootstrap
        lines.append(
            f"Macro-F1 difference against the champion: {boot.difference:+.4f}, {boot.confidence:.0%} interval"
            f" [{boot.low:+.4f}, {boot.high:+.4f}] (paired bootstrap, {boot.resamples} resamples);"
            f" McNemar p={evaluation.comparison.mcnemar.p_value:.4g}."
        )
    return lines


def _slices(evaluation: EvaluationResult) -> list[str]:
    slices = evaluation.challenger.slices
    if not slices:
        return []
    lines = ["", "## Slices", "", "| slice | rows | accuracy | macro-F1 |", "|---|---|---|---|"]
    for column, scores in slices.items():
        for group, score in sorted(scores.items(), key=lambda item: -item[1].n):
            lines.append(
                f"| {_cell(column)}={_cell(group)} | {score.n} | {score.accuracy:.4f} | {score.macro_f1:.4f} |"
            )
    return lines


def _retention(evaluation: EvaluationResult) -> list[str]:
    kept = evaluation.retention
    if kept is None:
        return []
    return [
        "",
        "## Retention set",
        "",
        f"`{_cell(kept.uri)}`, {kept.n} rows: accuracy {kept.challenger.accuracy:.4f}, macro-F1"
        f" {kept.challenger.macro_f1:.4f}"
        + (f" (champion {kept.champion.macro_f1:.4f})" if kept.champion is not None else "")
        + ".",
    ]


def _gate(decision: GateDecision | None) -> list[str]:
    lines = ["", "## Promotion gate", ""]
    if decision is None:
        return [*lines, "Registered without a gate decision (manual registration)."]
    lines.append(f"{'Passed' if decision.passed else 'Rejected'}: {len(decision.rules)} rules.")
    lines += ["", "| rule | observed | required | result |", "|---|---|---|---|"]
    for rule in decision.rules:
        lines.append(
            f"| {_cell(rule.name)} | {_num(rule.observed)} | {_cell(rule.requirement)} {rule.threshold:.4f} |"
            f" {'pass' if rule.passed else 'FAIL'} |"
        )
    return lines


def _lineage(tags: Mapping[str, str]) -> list[str]:
    lines = ["", "## Lineage", "", "| | |", "|---|---|"]
    for key in ("config_sha", "base_model", "pipeline_run_id", "git_sha", "image_tag", "validation"):
        if key in tags:
            lines.append(f"| {key} | `{_cell(tags[key])}` |")
    return lines


def _limitations(cfg: RunConfig, evaluation: EvaluationResult, labels: str) -> list[str]:
    lines = [
        "",
        "## Limitations",
        "",
        f"- Scored on {evaluation.test_rows} held-out rows of the same source as its training data; other"
        " domains, languages and text lengths may score lower (see the slices).",
        f"- Only the labels {labels} exist for it: every text gets one of them, whatever it is about.",
        f"- Texts beyond {cfg.model.max_length} tokens are cut; what comes after is not seen.",
    ]
    small = [
        f"{column}={value}"
        for column, scores in evaluation.challenger.slices.items()
        for value, s in scores.items()
        if s.n < 30
    ]
    if small:
        lines.append(f"- Slices with fewer than 30 test rows say little: {', '.join(small[:10])}.")
    return lines

"""On real data: a champion fine-tuned on SST-2, then a challenger trained on a tenth of the same rows,
both through the whole pipeline (kfp.local) with all-MiniLM-L6-v2 and configs/demo.yaml's gate, scored
on SST-2's dev set. The gate must reject the challenger and the run must say why.

Skipped when ../shared/data/sst2 (beside the repository) or the base model (`make base-model`) is
absent, as on CI's fresh clone. About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import REPO_ROOT

from refinery.config import load_config
from refinery.evaluation.gate import GateDecision
from refinery.gitops.repo import current_release
from refinery.orchestration.local import run_training
from refinery.registry.mlflow_registry import Registry

SST2 = REPO_ROOT.parent / "shared" / "data" / "sst2"
BASE_MODEL = REPO_ROOT / "models" / "all-MiniLM-L6-v2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SST2 / "train.csv").is_file(), reason=f"SST-2 not found at {SST2}"),
    pytest.mark.skipif(
        not (BASE_MODEL / "config.json").is_file(),
        reason=f"base model not found at {BASE_MODEL} (make base-model)",
    ),
]


def test_a_challenger_trained_on_a_tenth_of_sst2_is_rejected_with_its_reasons(tmp_path: Path) -> None:
    tenth = tmp_path / "sst2-train-tenth.csv"
    pd.read_csv(SST2 / "train.csv").sample(frac=0.1, random_state=0).to_csv(tenth, index=False)
    common = [
        f"state_dir={tmp_path / 'state'}",
        f"data.test_uri={SST2 / 'dev.csv'}",
        "data.labels=['0', '1']",
        f"model.base={BASE_MODEL}",
        # One dev sentence is also in train: reported, and prepare drops it from the test split.
        "data.validation.leakage.severity=warning",
    ]

    def config(train: Path, epochs: int = 3):  # type: ignore[no-untyped-def]
        overrides = [f"data.uri={train}", f"training.epochs={epochs}", *common]
        return load_config(REPO_ROOT / "configs" / "demo.yaml", overrides, base=REPO_ROOT)

    # One epoch on all of SST-2 (216 steps), then the demo's three on a tenth (60 steps).
    first = run_training(config(SST2 / "train.csv", epochs=1))
    assert first.succeeded and first.promoted, first.to_text()
    champion = first.steps["register"]["version"]

    second = run_training(config(tenth))
    shown = second.to_text()
    print(first.to_text(), shown, sep="\n")

    assert second.succeeded and not second.promoted, shown
    decision = GateDecision.from_dict(second.decision or {})
    assert not decision.passed
    failed = {rule.name for rule in decision.failed()}
    assert "max_regression.macro_f1" in failed, failed
    evaluation = second.steps["evaluate"]
    assert evaluation["champion_version"] == champion
    assert evaluation["challenger"]["macro_f1"] < evaluation["champion"]["macro_f1"] - 0.01
    # The reasons are shown: the console summary lists each failed rule with its figures.
    assert "gate: REJECTED" in shown and "[FAIL] max_regression.macro_f1" in shown
    # ...and the decision's reasons carry that rule's own sentence: the macro-F1 regression limit it broke.
    regression = next(rule for rule in decision.failed() if rule.name == "max_regression.macro_f1")
    assert regression.detail in decision.reasons, decision.reasons
    assert "gate.max_regression.macro_f1=" in regression.detail, regression.detail
    assert f"fails >= {regression.threshold:.4f}" in regression.detail, regression.detail
    # Nothing moved: the first model is still champion and still released.
    cfg = config(tenth)
    assert Registry(cfg.registry).champion(cfg.gitops.environment).version == champion  # type: ignore[union-attr]
    assert current_release(cfg.gitops).model_version == champion  # type: ignore[union-attr]

"""The release flow's layering: the registry calls no stage, and a pipeline step only adapts paths to the
flow (the flow itself is tested end to end in test_promotion.py and test_environments.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from tests.conftest import config_in

from refinery.orchestration import steps
from refinery.packaging.bento import PackageResult


def test_the_registry_imports_no_stage() -> None:
    stages = ("refinery.evaluation", "refinery.packaging", "refinery.gitops", "refinery.training")
    code = (
        "import sys\n"
        "import refinery.registry.card, refinery.registry.champions, refinery.registry.mlflow_registry\n"
        "import refinery.registry.lineage\n"
        f"print(sorted(m for m in sys.modules if m.startswith({stages!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    # Nor later, from inside a function: the import statements of every registry module, read as the
    # Bento's closure is (function-local imports included, TYPE_CHECKING blocks skipped).
    import refinery
    from refinery.packaging.closure import import_closure

    root = Path(refinery.__file__).parent
    reached = import_closure(sorted((root / "registry").glob("*.py")), root)
    assert reached and not [p for p in reached if str(p.with_suffix("")).replace("/", ".").startswith(stages)]


def test_a_disabled_serving_check_is_recorded_as_skipped_and_serves_nothing(
    tmp_path: Path, demo_df: pd.DataFrame
) -> None:
    cfg = config_in(tmp_path, tmp_path / "model", demo_df, ["gate.serving_check.enabled=false"])
    bento = PackageResult("refinery-demo:abc", "", str(tmp_path / "nowhere.bento"), "0" * 64)
    out, report = tmp_path / "check", tmp_path / "check.md"
    out.mkdir()

    # No test split exists: a disabled check reads nothing and starts nothing.
    assert steps.check_serving(cfg, bento, tmp_path / "no-data", out, report) is True

    assert report.read_text() == "# Serving check\n\nSkipped: gate.serving_check.enabled is false.\n"
    recorded = json.loads((out / "serving_check.json").read_text())
    assert (recorded["bento_tag"], recorded["started"]) == ("refinery-demo:abc", False)
    assert (recorded["passed"], recorded["skipped"]) == (True, True)

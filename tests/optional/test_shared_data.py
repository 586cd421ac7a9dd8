"""The data contract on real labelled data: SST-2 and customer reviews from ../shared/data.

The data lives beside the repository, never in it (see ../shared/data/README.md); every test here skips
when it is absent. Labels there are 0/1, so the demo configuration runs with ``data.labels=[0,1]``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from refinery.cli import main
from refinery.config import load_config
from refinery.data.suite import LEAKED_FROM, derive_columns
from refinery.data.text import comparison_keys
from refinery.data.validate import ValidationReport, read_splits

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
SST2_TRAIN = SHARED_DATA / "sst2" / "train.csv"
LEAKED_ROWS = 50


def shared(relative: str) -> Path:
    """A file of ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared data not present: {path}")
    return path


def validate(tmp_path: Path, data: Path, *overrides: str) -> tuple[int, ValidationReport]:
    """``refinery validate`` with the demo thresholds on ``data``; its exit code and validation.json."""
    out = tmp_path / "validation"
    sets = [f"state_dir={tmp_path / 'state'}", "data.labels=[0,1]", *overrides]
    argv = ["validate", "-c", str(DEMO_CONFIG), "--data", str(data), "-o", str(out)]
    code = main(argv + [arg for s in sets for arg in ("--set", s)])
    return code, ValidationReport.read(out / "validation.json")


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize(
    ("relative", "rows"), [("sst2/train.csv", 6920), ("customer_reviews/reviews.csv", 3771)]
)
def test_real_data_passes_the_demo_contract(tmp_path: Path, relative: str, rows: int) -> None:
    code, report = validate(tmp_path, shared(relative))

    assert code == 0, [f.describe() for f in report.failures]
    assert report.success
    assert report.row_count == rows


def test_test_split_copied_from_train_is_reported_as_exactly_those_rows(tmp_path: Path) -> None:
    train = read_csv(shared("sst2/train.csv"))
    # Rows whose normalised text occurs once in train: each copy leaks exactly one row.
    unique = train[~comparison_keys(train["text"]).duplicated(keep=False)]
    copied = unique.sample(n=LEAKED_ROWS, random_state=0).reset_index(drop=True)
    test_file = tmp_path / "test.csv"
    copied.to_csv(test_file, index=False)

    code, report = validate(tmp_path, SST2_TRAIN, f"data.test_uri={test_file}")

    assert code == 1
    assert [f.check for f in report.failures] == ["leakage"]
    assert report.warnings == []
    leak = report.failures[0]
    assert leak.severity == "error"
    assert leak.observed == LEAKED_ROWS
    # The report shows the first offending rows (texts may be shortened): each is the copied row at
    # that position of the test file.
    assert leak.rows
    for row in leak.rows:
        assert row.split == "test"
        assert copied["text"][row.row - 1].startswith(row.text.removesuffix("..."))
    # All of them: the rows the leakage expectation checks are exactly the 50 copies.
    cfg = load_config(
        DEMO_CONFIG, ["data.labels=[0,1]", f"data.uri={SST2_TRAIN}", f"data.test_uri={test_file}"]
    )
    frame, _, _ = read_splits(cfg.data)
    leaked = frame[derive_columns(frame, cfg.data)[LEAKED_FROM].notna()]
    assert sorted(leaked["text"]) == sorted(copied["text"])

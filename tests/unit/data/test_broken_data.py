"""`refinery validate` on every kind of broken data in the corpus: exit 2 with the file named when the
input cannot be read, exit 1 with the failed rule and its finding when it reads but breaks the contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from tests.broken_data import CORPUS, BrokenDataset
from tests.conftest import TEST_CONFIG

from refinery.cli import main


def _validate(case: BrokenDataset, tmp_path: Path, demo_df: pd.DataFrame) -> tuple[int, Path]:
    data = case.write(tmp_path, demo_df)
    out = tmp_path / "validation"
    overrides = [f"state_dir={tmp_path / 'state'}", *case.overrides(tmp_path)]
    argv = ["validate", "-c", str(TEST_CONFIG), "--data", str(data), "-o", str(out)]
    argv += [arg for item in overrides for arg in ("--set", item)]
    return main(argv), out


def test_the_corpus_has_at_least_fifteen_distinct_kinds() -> None:
    assert len({case.id for case in CORPUS}) == len(CORPUS) >= 15
    assert {case.outcome for case in CORPUS} == {"unusable", "invalid"}


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_broken_data_is_stopped_with_its_reason(
    case: BrokenDataset, tmp_path: Path, demo_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _validate(case, tmp_path, demo_df)
    printed = capsys.readouterr()
    if case.outcome == "unusable":
        assert code == 2, printed.out
        assert printed.err.startswith("error: unusable input: ")
        assert re.search(case.message, printed.err), printed.err
        assert not out.exists(), "nothing is written for input that cannot be read"
        return
    assert code == 1, printed.out
    summary = json.loads((out / "validation.json").read_text())
    assert summary["success"] is False
    failed = {f["check"]: f for f in summary["failures"]}
    assert case.check in failed, list(failed)
    assert re.search(case.message, failed[case.check]["message"]), failed[case.check]["message"]
    assert failed[case.check]["severity"] == "error"
    assert printed.out.startswith("FAILED: ")
    assert f"error   {case.check}: " in printed.out
    for name in ("report.md", "report.html"):
        assert case.check in (out / name).read_text()


def test_data_with_only_warnings_exits_zero_and_prints_them(
    tmp_path: Path, demo_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "reviews.csv"
    demo_df.assign(source="shop").to_csv(data, index=False)
    argv = ["validate", "-c", str(TEST_CONFIG), "--data", str(data), "-o", str(tmp_path / "v")]
    assert main([*argv, "--set", f"state_dir={tmp_path / 'state'}"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("PASSED: 600 rows, 0 error(s), 1 warning(s)")
    assert "warning extra_columns: unexpected column(s) ['source']" in printed
    assert f"report: {tmp_path / 'v' / 'report.html'}" in printed

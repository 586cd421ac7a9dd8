"""`refinery models list` and `refinery models show` against a registry with two versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import TEST_CONFIG, config_in
from tests.unit.registry.test_mlflow_registry import _write_inputs

from refinery.cli import main
from refinery.registry.mlflow_registry import Registry
from refinery.release.register import register_model


@pytest.fixture
def two_versions(tmp_path: Path, tiny_model_dir: Path) -> list[str]:
    """CLI arguments selecting a registry whose version 1 is dev's champion and version 2 challenger."""
    overrides = [f"state_dir={tmp_path / 'state'}", f"model.base={tiny_model_dir}"]
    cfg = config_in(tmp_path, tiny_model_dir, extra=overrides)
    for run, hint in (("run1", 5), ("run2", 4)):
        register_model(
            cfg, *_write_inputs(tmp_path / run, tiny_model_dir, macro_f1_hint=hint), run_id=f"pipe-{run}"
        )
    Registry(cfg.registry).set_champion("1", "dev")
    return ["-c", str(TEST_CONFIG), *(arg for o in overrides for arg in ("--set", o))]


def test_list_shows_every_version_with_aliases_and_scores(
    two_versions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", *two_versions]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "aliases" in lines[0] and "test macro-F1" in lines[0]
    assert lines[1].split()[:3] == ["1", "champion-dev", "1.000000"]
    assert lines[2].split()[:2] == ["2", "challenger"] and lines[2].endswith("pipe-run2")


@pytest.mark.parametrize(
    ("reference", "version"),
    [
        (None, "1"),
        ("review-sentiment-test@challenger", "2"),
        ("review-sentiment-test/1", "1"),
        ("@champion-dev", "1"),
        ("review-sentiment-test@champion-dev", "1"),
        ("2", "2"),
    ],
)
def test_show_resolves_references_and_prints_tags_and_card(
    two_versions: list[str], capsys: pytest.CaptureFixture[str], reference: str | None, version: str
) -> None:
    argv = ["models", "show", *two_versions] + ([reference] if reference else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"review-sentiment-test version {version} ")
    assert f"pipeline_run_id: pipe-run{version}" in out
    assert "## Intended use" in out and "## Limitations" in out


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            "other-model@champion-dev",
            "names model 'other-model', but this registry holds 'review-sentiment-test'",
        ),
        ("@staging", "no version with alias 'staging' (aliases: challenger, champion-dev)"),
        ("@champion-prod", "no version with alias 'champion-prod'"),
        ("9", "version 9"),
    ],
)
def test_show_names_what_it_cannot_find(
    two_versions: list[str], capsys: pytest.CaptureFixture[str], reference: str, message: str
) -> None:
    assert main(["models", "show", *two_versions, reference]) == 2
    assert message in capsys.readouterr().err

"""Run configuration: shipped configs validate, broken ones are rejected with the dotted path at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

from refinery.cli import main
from refinery.config import RunConfig, apply_overrides, load_config
from refinery.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CASES = sorted((Path(__file__).parent / "config_cases").glob("*.yaml"))


@pytest.mark.parametrize("name", ["demo.yaml", "test.yaml"])
def test_shipped_configs_load_and_resolve(name: str) -> None:
    cfg = load_config(REPO / "configs" / name, base=REPO)
    assert isinstance(cfg, RunConfig)
    assert Path(cfg.state_dir).is_absolute()
    assert cfg.registry.tracking_uri.startswith("sqlite:///")
    assert cfg.gitops.repository.startswith(cfg.state_dir)
    assert cfg.serving.inference_log.startswith("sqlite:///")


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_configs_are_rejected_with_the_dotted_path(case: Path) -> None:
    expected = case.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as err:
        load_config(case)
    assert expected in str(err.value)
    assert str(case) in str(err.value)


def test_overrides_are_typed_and_checked(tmp_path: Path) -> None:
    cfg = load_config(
        REPO / "configs" / "test.yaml", ["training.epochs=5", "gate.min.macro_f1=0.9"], base=REPO
    )
    assert cfg.training.epochs == 5 and cfg.gate.min["macro_f1"] == 0.9
    with pytest.raises(ConfigError, match=r"training\.epochz: unknown key"):
        load_config(REPO / "configs" / "test.yaml", ["training.epochz=5"], base=REPO)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["training.epochs"])
    with pytest.raises(ConfigError, match=r"data\.uri is not a section"):
        apply_overrides({"data": {"uri": "x"}}, ["data.uri.deep=1"])


def test_config_is_frozen_and_round_trips_through_a_dict() -> None:
    cfg = load_config(REPO / "configs" / "test.yaml", base=REPO)
    with pytest.raises(Exception, match="frozen"):
        cfg.training.epochs = 9  # type: ignore[misc]
    # Pipeline parameters arrive with numbers as floats (protobuf Struct); the config must survive that.
    as_floats = json.loads(json.dumps(cfg.to_dict()), parse_int=float)
    assert RunConfig.model_validate(as_floats) == cfg
    assert RunConfig.model_validate(as_floats).digest() == cfg.digest()


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_schema_and_error_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"data", "model", "training", "gate", "registry", "gitops"} <= set(schema["properties"])
    assert (
        main(["config", "show", "-c", str(Path(__file__).parent / "config_cases" / "unknown_key.yaml")]) == 2
    )
    assert "unknown key" in capsys.readouterr().err


def test_a_partial_rule_override_keeps_the_rule_s_other_defaults(tmp_path: Path) -> None:
    default = load_config(REPO_ROOT / "configs" / "test.yaml").data.validation
    cfg = load_config(
        REPO_ROOT / "configs" / "test.yaml",
        ["data.validation.text_length.severity=error", "data.validation.min_rows_per_class.min=7"],
    )
    rules = cfg.data.validation
    assert rules.text_length.severity == "error"
    assert rules.text_length.model_dump(exclude={"severity"}) == default.text_length.model_dump(
        exclude={"severity"}
    )
    assert (rules.min_rows_per_class.min, rules.min_rows_per_class.severity) == (7, "error")
    assert rules.min_rows.min == 100, "configs/test.yaml's own value stays"

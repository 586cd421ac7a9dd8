"""Run configuration: shipped configs validate, broken ones are rejected with the dotted path at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

from refinery.cli import main
from refinery.config import RunConfig, apply_overrides, load_config, parse_config
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


def test_on_off_yes_no_stay_words_in_files_and_overrides(tmp_path: Path) -> None:
    # YAML 1.1 would read `off` as false and the key `on` as true; only true/false are booleans here.
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: {uri: d.csv, labels: [a, b], validation: {leakage: {severity: off}}}\n"
        "model: {base: m}\n"
        "gate: {significance: {on: new, mode: off}}\n"
        "training: {refit: false}\n",
        encoding="utf-8",
    )
    cfg = load_config(
        path, ["data.validation.alphabetic.severity=off", "training.tracking=false"], base=tmp_path
    )
    assert cfg.data.validation.leakage.severity == "off" and cfg.data.validation.alphabetic.severity == "off"
    assert (cfg.gate.significance.on, cfg.gate.significance.mode) == ("new", "off")
    assert cfg.training.refit is False and cfg.training.tracking is False
    assert apply_overrides({}, ["a=yes", "b=on", "c=True"]) == {"a": "yes", "b": "on", "c": True}


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


def test_a_cluster_configuration_resolves_without_state_and_keeps_scratch_on_the_steps_disk() -> None:
    import tempfile

    from refinery.config import read_config, resolve

    cfg = read_config(REPO / "configs" / "prod.yaml")
    assert not cfg.embedded
    resolved = resolve(cfg)
    assert resolved.state_dir is None
    assert resolved.registry.tracking_uri == cfg.registry.tracking_uri
    assert resolved.packaging.bento_store == "s3://acme-ml-mlflow/bentos"
    # Scratch folders are each step's own; PVC mount paths stay as given.
    assert resolved.packaging.bentoml_home == str(Path(tempfile.gettempdir()) / "refinery" / "bentoml")
    assert resolved.training.checkpoint.dir == "/mnt/checkpoints"
    with pytest.raises(ConfigError, match="state_dir is null"):
        _ = resolved.state


def test_a_step_gets_its_sections_back_as_sent_and_nothing_else() -> None:
    from refinery.config import step_config

    cfg = load_config(REPO / "configs" / "demo.yaml", base=REPO)
    sections = cfg.sections()
    # kfp hands dict inputs over as protobuf Structs: every number arrives as a float.
    as_floats = json.loads(json.dumps(sections), parse_int=float)
    step = step_config(data=as_floats["data"], training=as_floats["training"])
    assert step.data == cfg.data and step.training == cfg.training
    assert step.sections() == {"data": sections["data"], "training": sections["training"]}
    # A section the step was not given is an error when read, never a silent default.
    with pytest.raises(ConfigError, match=r"reads gitops\.repository but is not given the gitops section"):
        _ = step.gitops.repository
    with pytest.raises(ConfigError, match="unknown configuration section"):
        step_config(resources={})


def test_the_config_parameter_and_the_run_parameters_rebuild_the_configuration(tmp_path: Path) -> None:
    from refinery.config import config_for_run, config_text, resolve, run_parameters

    cfg = load_config(REPO / "configs" / "demo.yaml", base=REPO)
    text = config_text(cfg)
    assert "\n" not in text, "one line: kfp writes each default into a comment line"
    # Settings whose defaults live on the field, not the class, and emptied mappings survive the trip.
    tricky = load_config(
        REPO / "configs" / "test.yaml",
        [
            "data.validation.conflicting_labels.severity=error",
            "data.validation.exact_duplicates.severity=warning",
            "data.validation.text_length.max_chars=1000",
            "hpo.space.batch_size=[8,16]",
            "gate.max_regression={}",
        ],
        base=REPO,
    )
    assert config_for_run(config_text(tricky), run_parameters(tricky), base=REPO) == tricky
    # A configuration of nothing but the required keys.
    minimal = parse_config(
        {"data": {"uri": "s3://d/x.csv", "labels": ["a", "b"]}, "model": {"base": "s3://m/base"}}, "minimal"
    )
    rebuilt = config_for_run(config_text(minimal), run_parameters(minimal), base=tmp_path)
    assert rebuilt == resolve(minimal, base=tmp_path)
    assert "epochs" not in text and "resources" not in text
    assert config_for_run(text, run_parameters(cfg), base=REPO) == cfg
    # The parameters win; an empty test URI means none; a YAML file may be named by its path or URI.
    path = tmp_path / "run.yaml"
    path.write_text(text)
    changed = config_for_run(
        f"file://{path}", {**run_parameters(cfg), "epochs": 1.0, "test_uri": ""}, base=REPO
    )
    assert changed.training.epochs == 1.0 and changed.data.test_uri is None
    with pytest.raises(ConfigError, match=r"cannot read the configuration s3://nowhere"):
        config_for_run("s3://nowhere-refinery-test/x.yaml", run_parameters(cfg))


def test_config_show_prints_the_run_forms_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    from refinery.config import COMPILE_TIME_SECTIONS, config_for_run, read_config, resolve

    assert main(["config", "show", "-c", str(REPO / "configs" / "prod.yaml"), "--parameters"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"config", "data_uri", "test_uri", "epochs", "learning_rate", "environment"}
    assert shown["environment"] == "prod" and shown["epochs"] == 4.0
    parameters = {name: value for name, value in shown.items() if name != "config"}
    # The run's configuration is the file's, but for what was fixed when compiling (pods, images, storage).
    run = config_for_run(shown["config"], parameters)
    expected = resolve(read_config(REPO / "configs" / "prod.yaml"))
    skip = set(COMPILE_TIME_SECTIONS)
    assert run.model_dump(exclude=skip) == expected.model_dump(exclude=skip)


def test_every_broken_cross_section_rule_is_named_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: {uri: d.csv, labels: [a, b]}\nmodel: {base: m}\n"
        "training: {batch_size: 10, processes_per_node: 4}\n"
        "monitoring: {window_size: 10, min_window_size: 20}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, base=tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"invalid configuration in {path}:"
    assert lines[1].startswith(
        "  training.batch_size 10 does not split evenly over training.processes_per_node 4"
    )
    assert lines[2].startswith("  monitoring.min_window_size 20 exceeds monitoring.window_size 10")


def test_a_step_is_judged_only_by_the_rules_of_the_sections_it_is_given() -> None:
    from refinery.config import config_text, step_config

    # The gate's rule on significance.on=new reads data too; a step given only the gate section has a
    # placeholder for data, which must not trip it.
    gate = {"significance": {"on": "new"}}
    assert step_config(gate=gate).gate.significance.on == "new"
    with pytest.raises(ConfigError, match=r"gate\.significance\.on is new, but no new labelled rows come in"):
        step_config(gate=gate, data={"uri": "d.csv", "labels": ["a", "b"]})
    # The pipeline parameter shortens each section on its own, with the same care.
    cfg = parse_config(
        {
            "data": {"uri": "d.csv", "labels": ["a", "b"], "feedback": True},
            "model": {"base": "m"},
            "gate": gate,
        }
    )
    assert '"on":"new"' in config_text(cfg)


def test_every_setting_that_names_a_place_is_declared_once_in_locations() -> None:
    """resolve() and the container runner's mounts both read LOCATIONS: a new path setting missing from
    it would be neither made absolute nor mounted."""
    from pydantic import BaseModel

    from refinery.config import LOCATIONS

    def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
        names = []
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names += leaves(kind, f"{prefix}{name}.")
            else:
                names.append(f"{prefix}{name}")
        return names

    place = ("uri", "_dir", "dir", "base", "_location", "repository", "store", "home", "synonyms", "_log")
    named = {key for key in leaves(RunConfig) if key.split(".")[-1].endswith(place)}
    named -= {"state_dir"}  # the root the others default under
    declared = [loc.key for loc in LOCATIONS]
    assert len(declared) == len(set(declared))
    assert named == set(declared)
    cfg = load_config(REPO / "configs" / "test.yaml", base=REPO)
    assert all(loc.get(cfg.to_dict()) is not None for loc in LOCATIONS if loc.kind != "data")

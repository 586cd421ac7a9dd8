"""Exit statuses that mean something, through ``refinery.cli.main``: 0 success, 1 the work ran and said no,
2 a usage or configuration error, 3 a service unreachable. Each case is cheap: it stops before any model
is trained (the pipeline runs that end in these statuses are in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import TEST_CONFIG
from tests.processes import free_port

from refinery.cli import main
from refinery.errors import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfigError,
    DataError,
    DataValidationError,
    GateRejected,
    KfpApiError,
    PackagingError,
    PromotionConflict,
    RegistryError,
    is_connection_failure,
)

COMMANDS = [["run"], ["validate"], ["monitor"], ["models", "list"], ["models", "show"]]


def _argv(command: list[str], tmp_path: Path, *overrides: str) -> list[str]:
    sets = [f"state_dir={tmp_path / 'state'}", *overrides]
    return [*command, "-c", str(TEST_CONFIG), *(arg for item in sets for arg in ("--set", item))]


def test_each_error_class_carries_its_status() -> None:
    assert ConfigError("x").exit_code == DataError("x").exit_code == EXIT_USAGE
    assert DataValidationError("x").exit_code == GateRejected("x").exit_code == EXIT_FAILED
    assert PromotionConflict("x").exit_code == EXIT_FAILED
    # A missing version is the caller's mistake; an unreachable registry is not.
    assert RegistryError("no version 9").exit_code == EXIT_USAGE
    unreachable = RegistryError("registry unreachable", unreachable=True)
    assert (unreachable.exit_code, unreachable.unreachable) == (EXIT_UNAVAILABLE, True)
    assert KfpApiError("down", unreachable=True).exit_code == EXIT_UNAVAILABLE
    assert KfpApiError("refused", status=401).exit_code == EXIT_USAGE


def test_connection_failures_are_told_from_answers() -> None:
    import urllib.error

    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise RuntimeError("wrapped by a client library") from exc
    except RuntimeError as wrapped:
        assert is_connection_failure(wrapped)
    assert is_connection_failure(urllib.error.URLError("timed out"))
    http_error = urllib.error.HTTPError("http://x", 404, "Not Found", {}, None)  # type: ignore[arg-type]
    assert not is_connection_failure(http_error)
    assert not is_connection_failure(PermissionError("read-only file system"))
    assert (
        PackagingError("x", unreachable=is_connection_failure(TimeoutError())).exit_code == EXIT_UNAVAILABLE
    )


def test_an_error_raised_from_a_database_that_never_answered_is_unreachable() -> None:
    import sqlalchemy

    from refinery.errors import MonitoringError

    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://refinery@127.0.0.1:{free_port()}/log", connect_args={"connect_timeout": 5}
    )
    with pytest.raises(MonitoringError) as raised:
        try:
            engine.connect()
        except sqlalchemy.exc.OperationalError as exc:
            raise MonitoringError(f"cannot read the inference log: {exc}") from exc
    assert raised.value.unreachable and raised.value.exit_code == EXIT_UNAVAILABLE
    # A database that answered with an error is no outage.
    import sqlite3

    locked = sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
    assert not is_connection_failure(locked)
    assert MonitoringError("cannot write the log").exit_code == EXIT_USAGE


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_configuration_error_exits_2(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(command, tmp_path, "training.epochz=2")) == EXIT_USAGE
    assert "training.epochz: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_cross_section_rule_exits_2_naming_both_settings(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(command, tmp_path, "training.processes_per_node=3")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "training.batch_size 16 does not split evenly over training.processes_per_node 3" in err


@pytest.mark.parametrize("scheme", ["http", "postgresql+psycopg"])
@pytest.mark.parametrize("command", [c for c in COMMANDS if c != ["validate"]], ids=" ".join)
def test_an_unreachable_registry_exits_3(
    command: list[str], scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    uri = f"{scheme}://127.0.0.1:{port}" + ("/mlflow" if scheme != "http" else "")
    assert main(_argv(command, tmp_path, f"registry.tracking_uri={uri}")) == EXIT_UNAVAILABLE
    assert f"registry unreachable at {uri}" in capsys.readouterr().err
    assert not (tmp_path / "state" / "runs").exists(), "nothing ran"


def test_data_that_cannot_be_read_exits_2_and_data_that_fails_its_contract_exits_1(
    tmp_path: Path, demo_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.csv"
    out = str(tmp_path / "validation")
    assert main([*_argv(["validate"], tmp_path), "--data", str(missing), "-o", out]) == EXIT_USAGE
    assert str(missing) in capsys.readouterr().err
    few = tmp_path / "few.csv"
    demo_df.head(30).to_csv(few, index=False)  # configs/test.yaml asks for at least 100 rows
    assert main([*_argv(["validate"], tmp_path), "--data", str(few), "-o", out]) == EXIT_FAILED
    assert "FAILED: 30 rows" in capsys.readouterr().out


def _summary(**steps: dict[str, object]) -> object:
    from refinery.orchestration.local import RunSummary

    return RunSummary(run_name="r", run_dir="/r", succeeded=True, seconds=1.0, steps=dict(steps))


@pytest.mark.parametrize(
    ("steps", "status", "said"),
    [
        ({"gate": {"passed": True, "rules": [], "reasons": []}, "promote": {"commit": "c" * 40}}, 0, None),
        ({"gate": {"passed": False, "rules": [], "reasons": ["macro_f1 0.5 < 0.6"]}}, 1, "the gate rejected"),
        (
            {"gate": {"passed": True, "rules": [], "reasons": []}},
            1,
            "the packaged Bento failed the serving check",
        ),
    ],
)
def test_run_exits_1_when_the_challenger_is_not_promoted(
    steps: dict[str, dict[str, object]],
    status: int,
    said: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A stand-in for the pipeline (which tests/integration runs for real, gate rejections included): this
    # test is about the status `refinery run` makes of a finished run's summary.
    from refinery.orchestration import local

    monkeypatch.setattr(local, "run_training", lambda *args, **kwargs: _summary(**steps))
    monkeypatch.setattr(local.RunSummary, "to_text", lambda self: "summary")
    assert main(_argv(["run"], tmp_path)) == status
    out = capsys.readouterr().out
    if said is None:
        assert "exit 1" not in out
    else:
        assert f"refinery run: exit 1: {said}" in out


@pytest.mark.parametrize("command", [["status"], ["models", "sync"]], ids=" ".join)
def test_an_unreachable_git_remote_exits_3(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = f"http://127.0.0.1:{free_port()}/gitops.git"  # nothing listens there
    assert main(_argv(command, tmp_path, f"gitops.repository={remote}")) == EXIT_UNAVAILABLE
    assert f"GitOps repository {remote} is not reachable" in capsys.readouterr().err

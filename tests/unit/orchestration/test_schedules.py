"""`refinery schedules apply|diff|list` with the real kfp client against the stand-in KFP API server
(tests/kfp_server.py): no Kubeflow Pipelines API server can run on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.kfp_server import KfpServer

from refinery.cli import main
from refinery.errors import ConfigError
from refinery.orchestration.schedules import MARKER, load_schedules

API = "/apis/v2beta1"
REPO = Path(__file__).resolve().parents[3]
PROD = REPO / "configs" / "prod.yaml"
CREATE = f"POST {API}/recurringruns"
DELETE = f"DELETE {API}/recurringruns/{{id}}"
# Each (pipeline, configuration) is compiled once for all these tests.
pytestmark = pytest.mark.usefixtures("compile_once")


def _weekly(**changes: Any) -> dict[str, Any]:
    return {
        "name": "weekly-training",
        "pipeline": "training",
        "config": str(PROD),
        "cron": "0 0 3 * * 1",
        **changes,
    }


def _nightly(**changes: Any) -> dict[str, Any]:
    return {
        "name": "nightly-small",
        "pipeline": "training",
        "config": str(PROD),
        "set": ["training.epochs=1"],
        "interval": "1d",
        "parameters": {"learning_rate": 1e-4},
        **changes,
    }


def _write(folder: Path, *schedules: dict[str, Any], removed: str | None = None) -> Path:
    path = folder / "schedules.yaml"
    tree: dict[str, Any] = {"schedules": list(schedules)}
    if removed:
        tree["removed"] = removed
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _by_name(server: KfpServer) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for run in server.recurring_runs.values():
        assert run["display_name"] not in runs, f"two recurring runs named {run['display_name']}"
        runs[run["display_name"]] = run
    return runs


def _apply(path: Path, capsys: pytest.CaptureFixture[str], expect: int = 0) -> str:
    code = main(["schedules", "apply", "-f", str(path)])
    captured = capsys.readouterr()
    assert code == expect, captured.err
    return captured.out + captured.err


def test_apply_creates_then_does_nothing_and_replaces_what_changed_keeping_the_name(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, _weekly(), _nightly())
    out = _apply(path, capsys)
    assert "created weekly-training" in out and "created nightly-small" in out
    runs = _by_name(kfp_server)
    weekly, nightly = runs["weekly-training"], runs["nightly-small"]
    assert weekly["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert nightly["trigger"]["periodic_schedule"]["interval_second"] == "86400"
    assert (weekly["mode"], weekly["status"], weekly["max_concurrency"], weekly["no_catchup"]) == (
        "ENABLE",
        "ENABLED",
        "1",
        True,
    )
    assert MARKER.search(weekly["description"]) and f"-f {path}" in weekly["description"]
    # Each pins the version `refinery submit` uploads for its configuration; the overrides make another.
    versions = {v["pipeline_version_id"]: v for v in kfp_server.versions.values()}
    assert len(versions) == 2
    pinned = versions[weekly["pipeline_version_reference"]["pipeline_version_id"]]
    assert pinned["pipeline_id"] == weekly["pipeline_version_reference"]["pipeline_id"]
    assert nightly["runtime_config"]["parameters"]["epochs"] == 1.0
    assert nightly["runtime_config"]["parameters"]["learning_rate"] == 1e-4
    assert weekly["runtime_config"]["parameters"]["epochs"] == 4.0
    experiment = kfp_server.experiments[weekly["experiment_id"]]
    assert (experiment["display_name"], experiment["namespace"]) == ("refinery-prod", "kubeflow-user")
    # Runs start as k8s/platform's least-privilege account (kfp.service_account).
    assert weekly["service_account"] == nightly["service_account"] == "refinery-pipeline"

    # Unchanged: reads only.
    kfp_server.calls.clear()
    assert _apply(path, capsys).splitlines()[-1] == "no changes"
    assert kfp_server.mutations() == []
    assert main(["submit", "-c", str(PROD)]) == 0
    assert len(kfp_server.versions) == 2, "submit runs the version the weekly schedule pins"
    capsys.readouterr()

    # Changed: diff says what, per field, and changes nothing; apply deletes and creates under the name.
    changed = _write(
        tmp_path, _weekly(cron="0 0 4 * * 1", parameters={"epochs": 2}, max_concurrency=2), _nightly()
    )
    kfp_server.calls.clear()
    assert main(["schedules", "diff", "-f", str(changed)]) == 0
    diff = capsys.readouterr().out
    assert kfp_server.mutations() == []
    assert "~ replace weekly-training (delete and create again, same name)" in diff
    assert "trigger: cron '0 0 3 * * 1' -> cron '0 0 4 * * 1'" in diff
    assert "parameters.epochs: 4.0 -> 2.0" in diff and "max_concurrency: 1 -> 2" in diff
    assert "pipeline version" not in diff and "nightly-small" in diff.splitlines()[-1]
    out = _apply(changed, capsys)
    assert "replaced weekly-training" in out and "trigger: cron '0 0 3 * * 1' -> cron '0 0 4 * * 1'" in out
    assert [call.route for call in kfp_server.mutations()] == [DELETE, CREATE]
    runs = _by_name(kfp_server)
    assert runs["weekly-training"]["recurring_run_id"] != weekly["recurring_run_id"]
    assert runs["weekly-training"]["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 1"
    assert runs["nightly-small"]["recurring_run_id"] == nightly["recurring_run_id"]

    # A new configuration is a new pinned version, said as such.
    moved = _write(
        tmp_path,
        _weekly(cron="0 0 4 * * 1", parameters={"epochs": 2}, max_concurrency=2),
        _nightly(set=["training.epochs=3"]),
    )
    assert main(["schedules", "diff", "-f", str(moved)]) == 0
    diff = capsys.readouterr().out
    assert "~ replace nightly-small" in diff and "pipeline version: refinery-training " in diff
    assert "parameters.epochs: 1.0 -> 3.0" in diff

    # Another service account is a replacement too (Kubeflow cannot change it in place).
    runner = _write(
        tmp_path,
        _weekly(
            cron="0 0 4 * * 1", parameters={"epochs": 2}, max_concurrency=2, set=["kfp.service_account=other"]
        ),
        _nightly(),
    )
    assert main(["schedules", "diff", "-f", str(runner)]) == 0
    diff = capsys.readouterr().out
    assert "~ replace weekly-training" in diff and "service_account: refinery-pipeline -> other" in diff
    assert "pipeline version" not in diff.split("nightly-small")[0]


def test_enabled_false_pauses_in_place_and_true_enables_again(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _apply(_write(tmp_path, _weekly(enabled=False)), capsys)
    [run] = kfp_server.recurring_runs.values()
    assert (run["mode"], run["status"]) == ("DISABLE", "DISABLED")
    kfp_server.calls.clear()
    out = _apply(_write(tmp_path, _weekly()), capsys)
    assert out.splitlines()[1].startswith("enabled weekly-training")
    assert [call.route for call in kfp_server.mutations()] == [f"POST {API}/recurringruns/{{id}}:enable"]
    assert [r["status"] for r in kfp_server.recurring_runs.values()] == ["ENABLED"]
    kfp_server.calls.clear()
    _apply(_write(tmp_path, _weekly(enabled=False)), capsys)
    assert [call.route for call in kfp_server.mutations()] == [f"POST {API}/recurringruns/{{id}}:disable"]
    assert list(kfp_server.recurring_runs) == [run["recurring_run_id"]]


def test_a_schedule_no_longer_declared_is_paused_or_deleted_by_policy(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _apply(_write(tmp_path, _weekly(), _nightly()), capsys)
    nightly = _by_name(kfp_server)["nightly-small"]
    out = _apply(_write(tmp_path, _weekly()), capsys)
    assert "paused nightly-small" in out and "no longer declared (removed: pause)" in out
    assert kfp_server.recurring_runs[nightly["recurring_run_id"]]["status"] == "DISABLED"
    kfp_server.calls.clear()
    assert _apply(_write(tmp_path, _weekly()), capsys).splitlines()[-1] == "no changes"
    assert kfp_server.mutations() == []
    out = _apply(_write(tmp_path, _weekly(), removed="delete"), capsys)
    assert "deleted nightly-small" in out and "no longer declared (removed: delete)" in out
    assert set(_by_name(kfp_server)) == {"weekly-training"}


def test_a_failure_midway_names_the_schedule_and_applying_again_finishes(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    third = _weekly(name="weekly-canary", cron="0 0 5 * * 1")
    path = _write(tmp_path, _weekly(), _nightly(), third)
    kfp_server.fail(CREATE, nth=2, status=500, message="etcd timed out")
    err = _apply(path, capsys, expect=2)
    assert "schedule 'nightly-small': create failed (1 of 3 changes done)" in err
    assert "HTTP 500 Internal Server Error: etcd timed out" in err and f"apply -f {path}` again" in err
    assert set(_by_name(kfp_server)) == {"weekly-training"}
    out = _apply(path, capsys)
    assert "created nightly-small" in out and "created weekly-canary" in out and "weekly-training" not in out
    assert set(_by_name(kfp_server)) == {"weekly-training", "nightly-small", "weekly-canary"}

    # A replacement that fails between its delete and its create leaves the schedule missing, not
    # doubled; the next apply creates it.
    changed = _write(tmp_path, _weekly(cron="0 30 3 * * 1"), _nightly(), third)
    kfp_server.fail(CREATE, nth=1, status=503)
    err = _apply(changed, capsys, expect=2)
    assert "schedule 'weekly-training': replace failed (0 of 1 changes done)" in err
    assert set(_by_name(kfp_server)) == {"nightly-small", "weekly-canary"}
    assert "created weekly-training" in _apply(changed, capsys)
    assert _by_name(kfp_server)["weekly-training"]["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * 1"
    assert _apply(changed, capsys).splitlines()[-1] == "no changes"


def test_recurring_runs_refinery_did_not_create_are_never_touched(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refinery.config import read_config
    from refinery.orchestration.kfp_api import connect

    # Someone's own pipeline, uploaded in one multipart call, and two recurring runs of it made by hand,
    # one of them named as a declared schedule.
    package = tmp_path / "handmade.yaml"
    assert main(["compile", "-c", str(PROD), "-o", str(package), "--set", "training.epochs=7"]) == 0
    client = connect(read_config(PROD))
    pipeline = client.upload_pipeline(str(package), pipeline_name="handmade")
    [version] = [v for v in kfp_server.versions.values() if v["pipeline_id"] == pipeline.pipeline_id]
    experiment = client.create_experiment("by-hand")
    ids = set()
    for name in ("weekly-training", "hand-made"):
        made = client.create_recurring_run(
            experiment.experiment_id,
            name,
            cron_expression="0 0 1 * * *",
            pipeline_id=pipeline.pipeline_id,
            version_id=version["pipeline_version_id"],
        )
        ids.add(made.recurring_run_id)
    capsys.readouterr()
    out = _apply(_write(tmp_path, _weekly(), removed="delete"), capsys)
    assert "created weekly-training" in out and "left alone: " in out and "hand-made (" in out
    assert ids <= set(kfp_server.recurring_runs) and len(kfp_server.recurring_runs) == 3
    kfp_server.calls.clear()
    out = _apply(_write(tmp_path, removed="delete"), capsys)
    assert "deleted weekly-training" in out
    assert set(kfp_server.recurring_runs) == ids
    assert [call.route for call in kfp_server.mutations()] == [DELETE]


def test_list_shows_trigger_status_version_and_last_run(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, _weekly(), _nightly(enabled=False))
    _apply(path, capsys)
    weekly = _by_name(kfp_server)["weekly-training"]
    kfp_server.add_run(weekly["recurring_run_id"], "SUCCEEDED", name="first")
    kfp_server.add_run(weekly["recurring_run_id"], "FAILED", name="second")
    later = _write(tmp_path, _weekly(), _nightly(enabled=False), _weekly(name="weekly-canary"))
    assert main(["schedules", "list", "-f", str(later)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TRIGGER", "STATUS", "PIPELINE", "VERSION", "LAST", "RUN", "MANAGED"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "cron '0 0 3 * * 1'" in rows["weekly-training"] and " enabled " in rows["weekly-training"]
    assert "FAILED 20" in rows["weekly-training"] and "refinery-training 0.1.0" in rows["weekly-training"]
    assert "every 86400 s" in rows["nightly-small"] and " paused " in rows["nightly-small"]
    assert "none yet" in rows["nightly-small"]
    assert "not applied" in rows["weekly-canary"]
    # With a configuration instead of a file: every recurring run of that Kubeflow.
    assert main(["schedules", "list", "-c", str(PROD)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_the_shipped_schedules_file_applies(
    kfp_server: KfpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    schedules = load_schedules(REPO / "configs" / "schedules.yaml")
    assert {s.pipeline for s in schedules.schedules} == {"training", "monitoring"}
    _apply(REPO / "configs" / "schedules.yaml", capsys)
    runs = _by_name(kfp_server)
    assert set(runs) == {s.name for s in schedules.schedules}
    pipelines = {p["display_name"] for p in kfp_server.pipelines.values()}
    assert pipelines == {"refinery-training", "refinery-monitoring"}


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (_weekly(interval="1h"), "schedules[0] (weekly-training): give exactly one of cron and interval"),
        (_weekly(cron=None), "schedules[0] (weekly-training): give exactly one of cron and interval"),
        (_weekly(cronn="0 0 3 * * 1"), "schedules[0] (weekly-training).cronn: unknown key"),
        (_weekly(cron="0 3 * * 1"), "has 5 fields; Kubeflow's cron has 6, seconds first: '0 0 3 * * 1'"),
        (_nightly(interval="an hour"), "schedules[0] (nightly-small).interval: 'an hour' is not an interval"),
        (_weekly(pipeline="inference"), "unknown pipeline 'inference'; known: training, monitoring"),
        (_weekly(max_concurrency=11), "schedules[0] (weekly-training).max_concurrency: Input should be less"),
        (_weekly(name="Weekly Training"), "schedules[0] (Weekly Training).name: String should match pattern"),
    ],
)
def test_a_bad_schedules_file_names_the_file_and_the_path(
    kfp_server: KfpServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    schedule: dict[str, Any],
    message: str,
) -> None:
    path = _write(tmp_path, {k: v for k, v in schedule.items() if v is not None})
    with pytest.raises(ConfigError) as err:
        load_schedules(path)
    assert f"invalid schedules file {path}" in str(err.value) and message in str(err.value)
    err_text = _apply(path, capsys, expect=2)
    assert message in err_text and kfp_server.calls == []


def test_what_a_schedule_names_is_checked_before_any_call(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, _weekly(name="a"), _weekly(name="a", cron="0 0 4 * * 1"))
    assert "schedule names must be unique: a declared more than once" in _apply(path, capsys, expect=2)
    path = _write(tmp_path, _weekly(parameters={"epochz": 2}))
    err = _apply(path, capsys, expect=2)
    assert (
        f"{path}: schedules[0] (weekly-training).parameters.epochz: the training pipeline has no such parameter"
        in err
    )
    path = _write(tmp_path, _weekly(config="missing.yaml"))
    err = _apply(path, capsys, expect=2)
    assert (
        f"{path}: schedules[0] (weekly-training): config file not found: {tmp_path / 'missing.yaml'}" in err
    )
    path = _write(tmp_path, _weekly(config=str(REPO / "configs" / "demo.yaml")))
    assert "is an embedded configuration" in _apply(path, capsys, expect=2)
    path = _write(tmp_path, _weekly(), _nightly(set=["kfp.namespace=team-b"]))
    err = _apply(path, capsys, expect=2)
    assert (
        f"{path}: schedules[1] (nightly-small) names Kubeflow Pipelines at {kfp_server.url} (namespace team-b)"
        in err
    )
    assert "one schedules file keeps the recurring runs of one Kubeflow Pipelines" in err
    assert kfp_server.calls == []

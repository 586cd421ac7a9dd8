"""The drift monitor of a cluster configuration starts its retraining run through the Kubeflow Pipelines
API (the stand-in server of tests/kfp_server.py: no KFP API server can run here), as a normal run of the
training pipeline's version for that configuration, keeping the trigger log's cooldown and claim.

The window, registry and trigger log are the embedded ones of tests/unit/monitoring/test_controller.py;
what the cluster configuration (configs/prod.yaml) decides here is where the run goes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tests.kfp_server import KfpServer
from tests.unit.monitoring.test_controller import T0, fill_log, register_champion, watching

from refinery.config import RunConfig, load_config, read_config
from refinery.errors import KfpApiError
from refinery.monitoring.controller import monitor
from refinery.monitoring.trigger_log import TriggerLog
from refinery.orchestration.kfp_api import submit_training
from refinery.orchestration.retrain import retrain_starter

REPO = Path(__file__).resolve().parents[3]
PROD = REPO / "configs" / "prod.yaml"
API = "/apis/v2beta1"


@pytest.fixture(scope="module")
def champion_state(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, object]:
    return register_champion(tmp_path_factory.mktemp("monitor-kfp"), tiny_model_dir, 0, with_stats=False)


@pytest.fixture
def watched(champion_state: dict[str, object], tmp_path: Path) -> RunConfig:
    """The monitor's view: the champion's drifted window in this test's own inference and trigger logs."""
    settings = ("monitoring.cooldown_minutes=60", "monitoring.min_labelled_rows=0")
    cfg = load_config(
        REPO / "configs" / "test.yaml", watching(champion_state, tmp_path / "state", *settings), base=REPO
    )
    fill_log(cfg, str(champion_state["version"]), n=200, seed=1, drifted=True)
    return cfg


def test_drift_starts_one_kfp_run_of_the_training_pipeline_then_the_cooldown_holds(
    kfp_server: KfpServer, compile_once: None, watched: RunConfig
) -> None:
    cluster = read_config(PROD)
    shown: list[str] = []

    first = monitor(watched, retrain_starter(cluster, show=shown.append), now=T0)

    assert first.action == "fired", first.reason
    [run] = kfp_server.runs.values()
    assert first.retrain_run_id == run["run_id"]
    assert f"retrain run {run['run_id']}" in first.reason
    [pipeline] = kfp_server.pipelines.values()
    [version] = kfp_server.versions.values()
    assert pipeline["display_name"] == "refinery-training"
    assert run["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert run["display_name"] == "refinery-retrain (drift monitor)"
    assert shown[0] == "starting a retraining run"
    assert shown[1].startswith(f"retraining run {run['run_id']} in Kubeflow Pipelines: ")
    assert shown[1].endswith(f"/#/runs/details/{run['run_id']}")
    # The pipeline version `refinery submit` starts for the same configuration: no second upload.
    assert submit_training(cluster).version_id == version["pipeline_version_id"]

    again = monitor(watched, retrain_starter(cluster), now=T0 + timedelta(minutes=10))
    assert again.action == "suppressed_cooldown"
    assert len(kfp_server.runs) == 2  # the submit above; the monitor started nothing more


def test_a_refused_run_is_recorded_on_the_claim_and_raised(
    kfp_server: KfpServer, compile_once: None, watched: RunConfig
) -> None:
    kfp_server.fail(f"POST {API}/runs", status=503, message="ml-pipeline is restarting")

    with pytest.raises(KfpApiError, match="ml-pipeline is restarting"):
        monitor(watched, retrain_starter(read_config(PROD)), now=T0)

    assert not kfp_server.runs
    [decision] = TriggerLog(watched.monitoring.trigger_log).decisions(watched.registry.model_name)
    assert decision.action == "fired" and decision.retrain_run_id is None
    assert "starting the retrain failed: KfpApiError" in decision.reason


def test_a_round_syncs_the_aliases_first_and_an_unreadable_gitops_repository_does_not_stop_it(
    kfp_server: KfpServer, compile_once: None, watched: RunConfig
) -> None:
    from refinery.config import resolve
    from refinery.orchestration.retrain import monitor_round

    # Nothing listens on port 9 of loopback: the clone is refused at once.
    missing = "gitops.repository=http://127.0.0.1:9/no-such-remote.git"
    cfg = load_config(REPO / "configs" / "test.yaml", [f"state_dir={watched.state_dir}", missing], base=REPO)
    view = resolve(watched.model_copy(update={"gitops": cfg.gitops}))

    done = monitor_round(view, read_config(PROD), now=T0)

    assert done.aliases == [] and "no-such-remote.git" in (done.aliases_error or "")
    assert done.alias_lines() == [f"aliases not synced: {done.aliases_error}"]
    assert done.decision.action == "fired" and len(kfp_server.runs) == 1

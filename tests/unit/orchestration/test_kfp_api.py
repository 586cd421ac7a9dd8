"""`refinery submit` and refinery.orchestration.kfp_api with the real kfp client against the stand-in KFP
API server (tests/kfp_server.py): no Kubeflow Pipelines API server can run on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.kfp_server import KfpServer

from refinery.cli import main
from refinery.config import read_config
from refinery.errors import KfpApiError
from refinery.orchestration.kfp_api import connect, endpoint, submit_training, wait_for_run
from refinery.version import image_tag

API = "/apis/v2beta1"
REPO = Path(__file__).resolve().parents[3]
PROD = REPO / "configs" / "prod.yaml"


def _runs(server: KfpServer) -> list[dict]:
    return list(server.runs.values())


def test_submit_uploads_the_compiled_pipeline_once_and_starts_runs_with_typed_parameters(
    kfp_server: KfpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "-c", str(PROD)]) == 0
    out = capsys.readouterr().out
    [pipeline] = kfp_server.pipelines.values()
    [version] = kfp_server.versions.values()
    [experiment] = kfp_server.experiments.values()
    [run] = _runs(kfp_server)
    assert (pipeline["display_name"], pipeline["namespace"]) == ("refinery-training", "kubeflow-user")
    assert version["name"].startswith(f"{image_tag()}-") and version["pipeline_id"] == pipeline["pipeline_id"]
    assert (experiment["display_name"], experiment["namespace"]) == ("refinery-prod", "kubeflow-user")
    # The link goes to the UI configs/prod.yaml names, not to the API.
    assert f"https://kubeflow.acme.example/pipeline/#/runs/details/{run['run_id']}" in out
    assert f"version {version['name']} (uploaded)" in out

    # The version is the file `refinery compile` writes, byte for byte in content.
    compiled = tmp_path / "pipeline.yaml"
    assert main(["compile", "-c", str(PROD), "-o", str(compiled)]) == 0
    spec, platform = yaml.safe_load_all(compiled.read_text())
    assert version["pipeline_spec"] == {"pipeline_spec": spec, "platform_spec": platform}

    # Every parameter of the run form, typed: numbers as numbers, the rest of the configuration as JSON.
    parameters = run["runtime_config"]["parameters"]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert parameters["epochs"] == 4.0 and isinstance(parameters["epochs"], float)
    assert parameters["learning_rate"] == 5e-05 and parameters["environment"] == "prod"
    assert parameters["data_uri"] == "s3://acme-ml-data/reviews/labelled/current/reviews.parquet"
    assert parameters["test_uri"] == ""
    # As k8s/platform's least-privilege account (kfp.service_account), not Kubeflow's default one.
    assert run["service_account"] == "refinery-pipeline"
    config = json.loads(parameters["config"])
    assert "kfp" not in config and "resources" not in config and config["state_dir"] is None

    # A second submission of the same configuration reuses the version; the function the drift monitor
    # calls returns the run with its link.
    before = len(kfp_server.calls)
    second = submit_training(read_config(PROD), run_name="again", experiment="other")
    routes = [call.route for call in kfp_server.calls[before:]]
    assert f"POST {API}/pipelines/upload_version" not in routes and f"POST {API}/pipelines" not in routes
    assert (second.version_id, second.version_uploaded) == (version["pipeline_version_id"], False)
    assert (second.run_name, second.experiment) == ("again", "other")
    assert second.url.endswith(f"/#/runs/details/{second.run_id}")
    assert len(kfp_server.versions) == 1 and len(_runs(kfp_server)) == 2

    # A changed configuration is another version of the same pipeline.
    assert main(["submit", "-c", str(PROD), "--set", "training.epochs=2"]) == 0
    assert len(kfp_server.pipelines) == 1 and len(kfp_server.versions) == 2
    assert _runs(kfp_server)[-1]["runtime_config"]["parameters"]["epochs"] == 2.0


def test_wait_follows_the_run_and_exits_0_when_it_succeeds(
    kfp_server: KfpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    kfp_server.script_next_run(
        [
            ("RUNNING", {"validate-data": "RUNNING"}),
            ("RUNNING", {"validate-data": "SUCCEEDED", "prepare-data": "RUNNING"}),
            ("SUCCEEDED", {"validate-data": "SUCCEEDED", "prepare-data": "SUCCEEDED"}),
        ]
    )
    assert main(["submit", "-c", str(PROD), "--wait"]) == 0
    out = capsys.readouterr().out
    [run] = _runs(kfp_server)
    lines = out.splitlines()
    follow = lines[lines.index(next(line for line in lines if "#/runs/details/" in line)) + 1 :]
    assert follow[:5] == [
        "step validate-data: RUNNING",
        f"run {run['run_id']}: RUNNING",
        "step validate-data: SUCCEEDED",
        "step prepare-data: RUNNING",
        "step prepare-data: SUCCEEDED",
    ]
    assert f"run {run['run_id']}: SUCCEEDED" in follow and follow[-1].startswith(
        f"run {run['run_id']} SUCCEEDED"
    )


def test_wait_exits_1_naming_the_failed_step(
    kfp_server: KfpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    kfp_server.script_next_run(
        [
            ("RUNNING", {"validate-data": "SUCCEEDED", "finetune": "RUNNING"}),
            ("FAILED", {"validate-data": "SUCCEEDED", "finetune": "FAILED"}),
        ],
        error="CUDA out of memory",
    )
    assert main(["submit", "-c", str(PROD), "--wait"]) == 1
    captured = capsys.readouterr()
    [run] = _runs(kfp_server)
    assert "step finetune: FAILED" in captured.out
    assert f"run {run['run_id']} FAILED at step finetune: CUDA out of memory" in captured.err


def test_wait_gives_up_after_the_timeout(kfp_server: KfpServer, capsys: pytest.CaptureFixture[str]) -> None:
    kfp_server.script_next_run([("RUNNING", {"validate-data": "RUNNING"})])
    assert main(["submit", "-c", str(PROD), "--wait", "--timeout", "0.2"]) == 1
    assert "did not end within 0.2 s (it is RUNNING)" in capsys.readouterr().err


def test_wait_for_run_with_a_client(kfp_server: KfpServer) -> None:
    run = submit_training(read_config(PROD))
    client = connect(read_config(PROD))
    kfp_server.set_run_state(run.run_id, "SUCCEEDED", {"validate-data": "SUCCEEDED"})
    outcome = wait_for_run(client, run.run_id, timeout=5)
    assert (outcome.run_id, outcome.state) == (run.run_id, "SUCCEEDED")


def test_a_bearer_token_from_the_environment_reaches_the_server(
    kfp_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with KfpServer(token="s3cret-token") as server:
        kfp_env.setenv("REFINERY_KFP_HOST", server.url)
        # Without it the server refuses, and refinery says so at once, naming the host.
        assert main(["submit", "-c", str(PROD)]) == 2
        err = capsys.readouterr().err
        assert (
            f"the Kubeflow Pipelines API at {server.url} (REFINERY_KFP_HOST) refused the credentials (HTTP 401)"
            in err
        )
        assert "REFINERY_KFP_TOKEN" in err and not server.pipelines
        kfp_env.setenv("REFINERY_KFP_TOKEN", "s3cret-token")
        server.calls.clear()
        assert main(["submit", "-c", str(PROD)]) == 0
        assert len(server.runs) == 1
        assert {call.headers.get("authorization") for call in server.calls} == {"Bearer s3cret-token"}
        assert "s3cret-token" not in capsys.readouterr().out


def test_the_pods_service_account_token_is_used_when_no_token_is_set(
    kfp_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("projected-sa-token\n")
    kfp_env.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with KfpServer(token="projected-sa-token") as server:
        kfp_env.setenv("REFINERY_KFP_HOST", server.url)
        assert endpoint(read_config(PROD)).credentials == f"the service-account token in {token}"
        assert main(["submit", "-c", str(PROD)]) == 0
        assert {call.headers.get("authorization") for call in server.calls} == {"Bearer projected-sa-token"}


def test_the_namespace_reaches_the_server(kfp_env: pytest.MonkeyPatch) -> None:
    with KfpServer(multi_user=True) as server:
        kfp_env.setenv("REFINERY_KFP_HOST", server.url)
        assert main(["submit", "-c", str(PROD), "--set", "kfp.namespace=team-a"]) == 0
        [experiment] = server.experiments.values()
        [pipeline] = server.pipelines.values()
        assert experiment["namespace"] == pipeline["namespace"] == "team-a"
        lists = [
            call
            for call in server.calls
            if call.method == "GET" and call.path in (f"{API}/experiments", f"{API}/pipelines")
        ]
        assert lists and all(call.query.get("namespace") == "team-a" for call in lists)
        # The multi-user server refuses a listing without one; refinery's error names host and call.
        with pytest.raises(
            KfpApiError, match=rf"looking up experiment refinery-prod at {server.url} failed: HTTP 400"
        ):
            submit_training(read_config(PROD, ["kfp.namespace=null"]))


def test_where_the_host_comes_from(kfp_env: pytest.MonkeyPatch) -> None:
    cfg = read_config(PROD)
    assert endpoint(cfg).host == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    kfp_env.setenv("KF_PIPELINES_ENDPOINT", "http://kfp.example:8888/")
    assert (endpoint(cfg).host, endpoint(cfg).host_from) == (
        "http://kfp.example:8888",
        "KF_PIPELINES_ENDPOINT",
    )
    kfp_env.setenv("REFINERY_KFP_HOST", "http://localhost:8888")
    kfp_env.setenv("KF_PIPELINES_UI_ENDPOINT", "http://localhost:8080")
    ep = endpoint(cfg)
    assert (ep.host, ep.host_from) == ("http://localhost:8888", "REFINERY_KFP_HOST")
    assert ep.run_url("r1") == "http://localhost:8080/#/runs/details/r1"


def test_no_host_anywhere_says_how_to_set_one(
    kfp_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "-c", str(PROD), "--set", "kfp.host=null"]) == 2
    err = capsys.readouterr().err
    assert "no Kubeflow Pipelines API is configured: set kfp.host" in err and "REFINERY_KFP_HOST" in err


def test_an_embedded_configuration_is_refused_before_any_call(
    kfp_server: KfpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "-c", str(REPO / "configs" / "demo.yaml")]) == 2
    assert "is an embedded configuration (state_dir .refinery)" in capsys.readouterr().err
    assert kfp_server.calls == []


def test_an_unreachable_host_is_named(
    kfp_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with KfpServer() as server:
        url = server.url  # a port nothing listens on once the server is stopped
    kfp_env.setenv("REFINERY_KFP_HOST", url)
    assert main(["submit", "-c", str(PROD)]) == 3  # a service unreachable
    assert (
        f"the Kubeflow Pipelines API at {url} (REFINERY_KFP_HOST) is unreachable" in capsys.readouterr().err
    )


def test_a_server_error_names_the_host_and_the_call(kfp_server: KfpServer) -> None:
    kfp_server.fail(f"POST {API}/runs", status=503, message="the database is down")
    with pytest.raises(KfpApiError) as err:
        submit_training(read_config(PROD), run_name="r")
    assert (
        str(err.value)
        == f"creating run r at {kfp_server.url} failed: HTTP 503 Service Unavailable: the database is down"
    )
    # What was created before the failure is reused by the next submission.
    submit_training(read_config(PROD), run_name="r")
    assert (len(kfp_server.versions), len(kfp_server.experiments), len(kfp_server.runs)) == (1, 1, 1)


def test_a_wrong_parameter_is_refused_before_any_call(kfp_server: KfpServer) -> None:
    from refinery.errors import ConfigError

    with pytest.raises(ConfigError, match=r"parameters\.epochz: the training pipeline has no such parameter"):
        submit_training(read_config(PROD), parameters={"epochz": 1})
    with pytest.raises(ConfigError, match=r"parameters\.epochs: 'two' is not a number"):
        submit_training(read_config(PROD), parameters={"epochs": "two"})
    assert kfp_server.calls == []

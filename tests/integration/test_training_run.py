"""The training pipeline run for real through kfp.local on a tiny model.

Great Expectations, the Trainer, MLflow (sqlite), BentoML, git and kfp.local all run for real; each
scenario checks what the registry, the Bento store and the GitOps repository hold afterwards.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from tests.broken_data import CORPUS, BrokenDataset
from tests.conftest import REPO_ROOT
from tests.processes import free_port

from refinery.config import RunConfig, load_config
from refinery.gitops.repo import current_release
from refinery.orchestration.local import run_training
from refinery.registry.mlflow_registry import Registry

pytestmark = pytest.mark.slow


TEST_CONFIG = REPO_ROOT / "configs" / "test.yaml"


def _overrides(tmp: Path, data: pd.DataFrame, model_dir: Path, state: Path) -> list[str]:
    data_path = tmp / f"reviews-{len(list(tmp.glob('reviews-*.csv')))}.csv"
    data.to_csv(data_path, index=False)
    return [f"state_dir={state}", f"data.uri={data_path}", f"model.base={model_dir}"]


def _config(
    tmp: Path, data: pd.DataFrame, model_dir: Path, state: Path, extra: list[str] | None = None
) -> RunConfig:
    return load_config(
        TEST_CONFIG, [*_overrides(tmp, data, model_dir, state), *(extra or [])], base=REPO_ROOT
    )


def _gitops_head(cfg: RunConfig) -> str:
    import subprocess

    return subprocess.run(
        ["git", "--git-dir", cfg.gitops.repository, "rev-parse", cfg.gitops.branch],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, demo_df: pd.DataFrame, tiny_model_dir: Path):
    """A state folder whose first run made a champion; the tests then try to replace it."""
    tmp = tmp_path_factory.mktemp("loop")
    state = tmp / "state"

    def make(extra: list[str] | None = None, data: pd.DataFrame | None = None) -> RunConfig:
        return _config(tmp, demo_df if data is None else data, tiny_model_dir, state, extra)

    first = run_training(make())
    cli_args = ["-c", str(TEST_CONFIG)]
    for item in _overrides(tmp, demo_df, tiny_model_dir, state):
        cli_args += ["--set", item]
    return make, first, cli_args


def test_first_run_validates_trains_registers_packages_promotes_and_crowns(loop) -> None:
    make, first, _ = loop
    cfg = make()
    assert first.succeeded, first.to_text()
    assert first.decision["passed"]
    registry = Registry(cfg.registry)
    champion = registry.champion(cfg.gitops.environment)
    assert champion is not None and champion.version == first.steps["register"]["version"]
    assert registry.champions() == {cfg.gitops.environment: champion.version}
    # Lineage recorded on the version.
    for tag in ("data_sha256", "config_sha", "pipeline_run_id", "git_sha", "base_model"):
        assert champion.tags.get(tag), tag
    assert champion.tags["pipeline_run_id"] == first.run_name
    # The champion's Bento exists and the GitOps overlay names exactly this release.
    import bentoml  # noqa: F401  (BENTOML_HOME is read from the environment by the store)

    assert champion.tags["bento_tag"] == first.steps["package"]["bento_tag"]
    release = current_release(cfg.gitops)
    assert release is not None
    assert (release.model_version, release.bento_tag) == (champion.version, champion.tags["bento_tag"])
    assert champion.tags[f"{cfg.gitops.environment}.gitops_commit"] == _gitops_head(cfg)
    assert "champion" in first.to_text()
    assert first.steps["evaluate"]["challenger"]["macro_f1"] >= cfg.gate.min["macro_f1"]


def test_worse_challenger_is_not_promoted(loop) -> None:
    make, first, _ = loop
    cfg = make(["training.learning_rate=1e-9", "training.epochs=1"])
    registry = Registry(cfg.registry)
    before_versions = {v.version for v in registry.versions()}
    head = _gitops_head(cfg)
    summary = run_training(cfg)
    assert summary.succeeded  # the pipeline worked; the gate said no
    assert not summary.decision["passed"]
    assert any(r["name"] == "max_regression.macro_f1" and not r["passed"] for r in summary.decision["rules"])
    assert registry.champion(cfg.gitops.environment).version == first.steps["register"]["version"]
    assert {v.version for v in registry.versions()} == before_versions
    assert _gitops_head(cfg) == head
    assert "register" not in summary.steps and "champion: unchanged" in summary.to_text()


@pytest.mark.parametrize(
    ("broken", "failed_step"),
    [
        (["gitops.repository=file:///nonexistent/refinery-gitops.git"], "promote"),
        (["packaging.service_dir=/nonexistent/serving"], "package"),
    ],
    ids=["promote-fails", "package-fails"],
)
def test_failure_after_registration_leaves_the_champion_in_place(loop, broken, failed_step) -> None:
    make, _first, _ = loop
    # Another seed, so the challenger is no copy of the champion; a lenient gate, so it gets past it.
    passing = [
        "training.learning_rate=0.0015",
        "training.seed=8",
        "gate.significance.mode=off",
        "gate.max_regression.macro_f1=1",
    ]
    cfg = make([*passing, "gate.slices.enabled=false", *broken])
    registry = Registry(cfg.registry)
    champion_before = registry.champion(cfg.gitops.environment)
    head = _gitops_head(make())
    summary = run_training(cfg)
    assert not summary.succeeded
    assert summary.failed_step == failed_step
    assert summary.error, "the failed step's error message is shown"
    assert registry.champion(cfg.gitops.environment).version == champion_before.version
    assert _gitops_head(make()) == head


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_broken_data_stops_the_run_at_validate_data_and_nothing_is_registered(
    tmp_path: Path, demo_df: pd.DataFrame, tiny_model_dir: Path, case: BrokenDataset
) -> None:
    data = case.write(tmp_path, demo_df)
    overrides = [f"state_dir={tmp_path / 'state'}", f"data.uri={data}", f"model.base={tiny_model_dir}"]
    cfg = load_config(TEST_CONFIG, [*overrides, *case.overrides(tmp_path)], base=REPO_ROOT)
    summary = run_training(cfg)
    assert not summary.succeeded
    assert summary.failed_step == "validate-data"
    error = "DataError" if case.outcome == "unusable" else "DataValidationError"
    assert summary.error.startswith(f"{error}: "), summary.error
    assert re.search(case.message, summary.error), summary.error
    assert set(summary.steps) <= {"resolve-config", "validate-data"}, "the run stopped before prepare_data"
    assert Registry(cfg.registry).versions() == []
    assert not Path(cfg.gitops.repository).exists()
    assert not Path(cfg.packaging.bento_store or "").exists()


def test_serve_predict_feedback_and_monitor_retrain_on_the_new_labels_once(loop, tmp_path: Path) -> None:
    """The back half of the loop through the CLI: `refinery serve`, `predict`, `feedback`, `monitor` twice."""
    import subprocess
    import sys

    import httpx

    from refinery.cli import main
    from refinery.data.demo import generate_reviews
    from refinery.monitoring.story import loop_story
    from refinery.monitoring.trigger_log import TriggerLog
    from refinery.orchestration.local import collect_summary

    make, _first, base_args = loop
    cli_args = [*base_args, "--set", "data.feedback=true", "--set", "monitoring.min_labelled_rows=100"]
    cfg = make(["data.feedback=true"])
    port = free_port()
    serve_args = [*cli_args, "--set", f"serving.port={port}"]
    drifted = tmp_path / "drifted.csv"
    generate_reviews(n=300, seed=5, drifted=True).to_csv(drifted, index=False)
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "refinery.cli", "serve", *serve_args], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            assert main(["predict", *serve_args, "--wait", "120", "--input", str(drifted)]) == 0
            bad = httpx.post(f"http://127.0.0.1:{port}/classify", json={"texts": ["fine", 3]}, timeout=30)
            assert bad.status_code == 400 and "texts" in bad.text
            empty = httpx.post(f"http://127.0.0.1:{port}/classify", json={"texts": []}, timeout=30)
            assert empty.status_code == 400 and "empty" in empty.text
            triggers = TriggerLog(cfg.monitoring.trigger_log)
            # Drift, but no labels yet: a retrain would train on the same data (a quiet exit code).
            assert main(["monitor", *cli_args, "--exit-code"]) == 0
            assert [d.action for d in triggers.decisions(cfg.registry.model_name)] == ["awaiting_labels"]
            assert main(["feedback", *serve_args, "--input", str(drifted), "--limit", "200"]) == 0
        finally:
            server.terminate()
            server.wait(timeout=60)
    # `refinery serve` became the server: stopping it stopped BentoML and its workers.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)

    # --exit-code: 1 says a retraining run started (the CronJob's drift alert reads it).
    assert main(["monitor", *cli_args, "--exit-code"]) == 1
    decisions = triggers.decisions(cfg.registry.model_name)
    assert [d.action for d in decisions] == ["awaiting_labels", "fired"]
    retrain_run = decisions[1].retrain_run_id
    run_dir = next((Path(cfg.state_dir) / "runs").glob(f"*/{retrain_run}"))
    summary = collect_summary(run_dir, 0.0)
    # The retrain learnt from the 200 labelled rows: some trained on, the rest the `new` test set the
    # gate compared the two models on.
    new_rows = summary.steps["prepare-data"]["new_rows"]
    assert new_rows["train"] + new_rows["test"] == 200 and new_rows["test"] > 30
    assert summary.steps["evaluate"]["comparison"]["on"] == "new"
    promoted = summary.decision["passed"]
    assert ("promote" in summary.steps) == promoted
    assert main(["monitor", *cli_args]) == 0
    actions = [d.action for d in triggers.decisions(cfg.registry.model_name)]
    # A promoted v2 has served nothing yet; else v1's window is within the cooldown.
    assert actions[-1] == ("insufficient_data" if promoted else "suppressed_cooldown")
    # The loop summary reads the same records.
    story = loop_story(cfg)
    assert [d.action for d in story.decisions] == actions
    assert story.versions[0].version == "1" and story.versions[0].promoted


def test_hyperparameter_search_trains_every_trial_and_carries_the_best_on(
    tmp_path: Path, demo_df: pd.DataFrame, tiny_model_dir: Path
) -> None:
    search = ["hpo.enabled=true", "hpo.strategy=grid", "hpo.space.learning_rate=[0.00001,0.002]"]
    cfg = _config(tmp_path, demo_df, tiny_model_dir, tmp_path / "state", search)
    summary = run_training(cfg)
    assert summary.succeeded, summary.error
    trials = summary.steps["search"]["trials"]
    assert [t["params"]["learning_rate"] for t in trials] == [0.00001, 0.002]
    best = summary.steps["search"]["best_trial"]
    assert best == max(trials, key=lambda t: t["value"])["number"]
    assert "search: 2 trials, best trial" in summary.to_text()
    # The registered model is the winner's, and says so.
    [version] = Registry(cfg.registry).versions()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Registry(cfg.registry).download(version.version, "model", Path(tmp))
        assert json.loads((model_dir / "search.json").read_text())["best_trial"] == best

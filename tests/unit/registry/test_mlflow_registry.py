"""The MLflow registry on both back ends: versions, lineage tags, aliases, downloads, errors.

Every test that uses a registry runs twice: on a throwaway sqlite file (the embedded default) and on a
fresh database of the session's throwaway PostgreSQL server (tests/postgres.py). Registering costs an
MLflow run plus artifact copies, so one registry with two registered versions is shared by the tests of
this module per back end; tests that need an empty or broken registry get their own.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import config_in
from tests.postgres import PostgresServer
from tests.processes import free_port

from refinery.config import RegistryConfig, RunConfig
from refinery.errors import DataError, RegistryError
from refinery.evaluation.evaluate import EvaluationResult
from refinery.evaluation.metrics import classification_metrics
from refinery.registry.mlflow_registry import ModelVersionInfo, Registry
from refinery.release.register import register_model

LINEAGE = ("data_uri", "data_sha256", "config_sha", "base_model", "pipeline_run_id", "git_sha")


NewStore = Callable[[Path], str]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest) -> Iterator[NewStore]:
    """Makes the tracking URI of a new, empty store of one back end, given a folder for its files.

    sqlite: ``mlflow.db`` in the folder. postgres: a new database on the session's server, dropped when
    the module's tests of this back end are done.
    """
    if request.param == "sqlite":
        yield lambda folder: f"sqlite:///{folder / 'mlflow.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    made: list[str] = []

    def new(_folder: Path) -> str:
        made.append(server.create_database("mlflow"))
        return server.url(made[-1])

    yield new
    for name in made:
        server.drop_database(name)


def _registry_config(
    folder: Path, name: str = "review-sentiment-test", tracking_uri: str | None = None
) -> RegistryConfig:
    return RegistryConfig(
        tracking_uri=tracking_uri or f"sqlite:///{folder / 'mlflow.db'}",
        artifact_location=str(folder / "mlartifacts"),
        model_name=name,
        experiment="refinery-test",
    )


def _write_inputs(root: Path, tiny_model_dir: Path, macro_f1_hint: int) -> tuple[Path, Path, Path]:
    """A model dir (with training.json), a prepared data dir and an evaluation dir, all small."""
    model_dir = root / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "training.json").write_text(
        json.dumps(
            {"epochs_run": 2, "best_validation_macro_f1": 0.8, "metrics": {"train_loss": 0.4}, "ok": True}
        )
    )
    data_dir = root / "prepared"
    data_dir.mkdir()
    pd.DataFrame(
        {
            "text_length": [10.0, 52.0, 31.0],
            "word_count": [2, 9, 6],
            "label": ["negative", "positive", "positive"],
        }
    ).to_parquet(data_dir / "reference.parquet", index=False)
    (data_dir / "profile.json").write_text(json.dumps({"rows": 3, "labels": {"counts": {"positive": 2}}}))
    (data_dir / "notes.txt").write_text("not part of the reference")
    (data_dir / "prepared.json").write_text(
        json.dumps(
            {
                "data_sha256": "ab" * 32,
                "source_uris": {"train": "reviews.csv", "test": "held-out.csv"},
                "source_sha256": {"train": "ab" * 32, "test": "cd" * 32},
                "rows": 3,
            }
        )
    )
    eval_dir = root / "evaluation"
    labels = ("negative", "positive")
    y_true = ["negative"] * 5 + ["positive"] * 5
    y_pred = ["negative"] * macro_f1_hint + ["positive"] * (10 - macro_f1_hint)
    EvaluationResult(labels, 10, classification_metrics(y_true, y_pred, labels)).write_json(
        eval_dir / "evaluation.json"
    )
    return model_dir, data_dir, eval_dir


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, new_store: NewStore
) -> dict[str, Any]:
    """One registry with two versions registered through register_model()."""
    root = tmp_path_factory.mktemp("registry")
    cfg = config_in(root, tiny_model_dir, extra=[f"registry.tracking_uri={new_store(root)}"])
    first = _write_inputs(root / "run1", tiny_model_dir, macro_f1_hint=5)
    second = _write_inputs(root / "run2", tiny_model_dir, macro_f1_hint=4)
    v1 = register_model(cfg, *first, run_id="pipeline-run-1")
    v2 = register_model(cfg, *second, run_id="pipeline-run-2")
    return {"cfg": cfg, "registry": Registry(cfg.registry), "v1": v1, "v2": v2, "root": root}


def test_register_records_lineage_metrics_and_challenger_alias(shared: dict[str, Any]) -> None:
    cfg: RunConfig = shared["cfg"]
    v1: ModelVersionInfo = shared["v1"]
    v2: ModelVersionInfo = shared["v2"]

    assert (v1.version, v2.version) == ("1", "2")
    assert v1.name == v2.name == "review-sentiment-test"
    assert set(LINEAGE) <= set(v1.tags)
    assert v1.tags["data_uri"] == cfg.data.uri
    assert v1.tags["data_sha256"] == "ab" * 32
    # A given test file is part of the lineage; no validation file was given.
    assert (v1.tags["test_data_uri"], v1.tags["test_data_sha256"]) == ("held-out.csv", "cd" * 32)
    assert "validation_data_sha256" not in v1.tags
    assert v1.tags["config_sha"] == cfg.digest()
    assert v1.tags["base_model"] == cfg.model.base
    assert v1.tags["pipeline_run_id"] == "pipeline-run-1"
    assert v2.tags["pipeline_run_id"] == "pipeline-run-2"
    assert v1.tags["git_sha"]
    assert float(v1.tags["test_macro_f1"]) == pytest.approx(1.0)
    assert float(v2.tags["test_macro_f1"]) < 1.0
    assert v1.source == f"runs:/{v1.run_id}/"
    # The alias names the newest version only.
    assert v2.aliases == ("challenger",)
    assert shared["registry"].get("1").aliases == ()
    assert shared["registry"].challenger().version == "2"


def test_run_holds_metrics_and_params(shared: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    cfg: RunConfig = shared["cfg"]
    uri = cfg.registry.tracking_uri
    run = MlflowClient(tracking_uri=uri, registry_uri=uri).get_run(shared["v1"].run_id)

    assert run.data.metrics["test_macro_f1"] == pytest.approx(1.0)
    assert run.data.metrics["test_accuracy"] == pytest.approx(1.0)
    assert run.data.metrics["training_best_validation_macro_f1"] == pytest.approx(0.8)
    assert run.data.metrics["training_metrics_train_loss"] == pytest.approx(0.4)
    assert "training_ok" not in run.data.metrics
    assert run.data.params["learning_rate"] == str(cfg.training.learning_rate)
    assert run.data.tags["pipeline_run_id"] == "pipeline-run-1"
    assert run.info.status == "FINISHED"
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(cfg.registry.artifact_location)


def test_versions_lists_every_version_oldest_first(shared: dict[str, Any]) -> None:
    versions = shared["registry"].versions()

    assert [v.version for v in versions] == ["1", "2"]
    assert versions[1].aliases[0] == "challenger"
    assert versions[0].tags["pipeline_run_id"] == "pipeline-run-1"


def test_champion_alias_moves_per_environment(shared: dict[str, Any]) -> None:
    registry: Registry = shared["registry"]

    registry.set_champion("1", "dev")
    assert registry.champion("dev").version == "1"
    assert registry.champion("prod") is None
    assert registry.get("1").aliases == ("champion-dev",)

    registry.set_champion("2", "dev")
    registry.set_champion("1", "prod")
    assert registry.champion("dev").version == "2"
    assert registry.champion("prod").version == "1"
    assert registry.get("1").aliases == ("champion-prod",)
    assert registry.get("2").aliases == ("challenger", "champion-dev")
    assert registry.champions() == {"dev": "2", "prod": "1"}
    # A second Registry on the same URI sees the same state.
    assert Registry(shared["cfg"].registry).champion("dev").version == "2"
    registry.remove_alias("champion-prod")
    registry.remove_alias("champion-prod")  # gone already: no error
    assert registry.champions() == {"dev": "2"}


def test_a_legacy_champion_alias_stands_for_the_configured_environment_only(shared: dict[str, Any]) -> None:
    """An older registry's plain `champion` alias: read for the configured environment while it has no
    alias of its own, never for another environment."""
    from mlflow import MlflowClient

    registry: Registry = shared["registry"]
    uri = shared["cfg"].registry.tracking_uri
    registry.remove_alias("champion-dev")
    # As refinery wrote it before champions were per environment.
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        registry.name, "champion", "1"
    )
    try:
        assert registry.champion("dev") is None
        assert registry.champion("dev", legacy=True).version == "1"
        assert registry.champion("prod") is None
        assert registry.resolve(None, environment="dev").version == "1"
        assert registry.resolve("@champion-dev", environment="dev").version == "1"
        with pytest.raises(RegistryError, match="no version with alias 'champion-dev'"):
            registry.resolve("@champion-dev")
        registry.set_champion("2", "dev")
        # Its own alias wins over the plain one.
        assert registry.champion("dev", legacy=True).version == "2"
        assert registry.resolve("@champion-dev", environment="dev").version == "2"
    finally:
        registry.remove_alias("champion")


def test_set_champion_of_a_missing_version_is_refused(shared: dict[str, Any]) -> None:
    registry: Registry = shared["registry"]
    before = registry.champion("dev")

    with pytest.raises(RegistryError, match="version 7 of review-sentiment-test not found"):
        registry.set_champion("7", "dev")
    assert registry.champion("dev") == before


def test_untag_removes_only_the_tags_a_version_has(shared: dict[str, Any]) -> None:
    registry: Registry = shared["registry"]
    registry.tag("2", {"prod.pending_branch": "promote/prod/review-sentiment-test-v2"})

    registry.untag("2", ["prod.pending_branch", "prod.never_set"])

    assert "prod.pending_branch" not in registry.get("2").tags
    assert registry.get("2").tags["pipeline_run_id"] == "pipeline-run-2"


def test_tag_adds_packaging_and_gitops_tags(shared: dict[str, Any]) -> None:
    registry: Registry = shared["registry"]

    registry.tag("1", {"bento_tag": "review-sentiment:abc", "gitops_commit": "0" * 40})

    tags = registry.get("1").tags
    assert tags["bento_tag"] == "review-sentiment:abc"
    assert tags["gitops_commit"] == "0" * 40
    assert tags["data_sha256"] == "ab" * 32
    with pytest.raises(RegistryError, match="version 12 of review-sentiment-test not found"):
        registry.tag("12", {"bento_tag": "x"})


def test_download_returns_each_artifact_folder(shared: dict[str, Any], tmp_path: Path) -> None:
    from refinery.modeling import load_classifier

    registry: Registry = shared["registry"]

    model = registry.download("1", "model", tmp_path)
    assert model == tmp_path / "model"
    assert {"model.safetensors", "config.json", "training.json"} <= {p.name for p in model.iterdir()}
    assert load_classifier(model, max_length=32).labels == ("negative", "positive")

    reference = registry.download("1", "reference", tmp_path)
    # The drift reference and the data profile, nothing else of the prepared folder.
    assert sorted(p.name for p in reference.iterdir()) == ["profile.json", "reference.parquet"]
    assert json.loads((reference / "profile.json").read_text())["rows"] == 3
    assert list(pd.read_parquet(reference / "reference.parquet").columns) == [
        "text_length",
        "word_count",
        "label",
    ]

    evaluation = registry.download("2", "evaluation", tmp_path)
    assert EvaluationResult.from_json(evaluation).challenger.macro_f1 < 1.0

    # Downloading again replaces the folder; no staging folders are left behind.
    assert registry.download("2", "model", tmp_path) == model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation", "model", "reference"]


def test_download_of_unknown_artifact_or_version_is_named(shared: dict[str, Any], tmp_path: Path) -> None:
    registry: Registry = shared["registry"]

    with pytest.raises(RegistryError, match=r"unknown artifact 'weights'"):
        registry.download("1", "weights", tmp_path)
    with pytest.raises(RegistryError, match="version 5 of review-sentiment-test not found"):
        registry.download("5", "model", tmp_path)
    with pytest.raises(RegistryError, match="'latest' is not a version number"):
        registry.get("latest")


def test_register_model_without_prepared_summary_is_refused(
    shared: dict[str, Any], tiny_model_dir: Path
) -> None:
    root = shared["root"] / "broken"
    model_dir, data_dir, eval_dir = _write_inputs(root, tiny_model_dir, macro_f1_hint=5)
    (data_dir / "prepared.json").unlink()

    with pytest.raises(DataError, match=r"prepared dataset summary not found: .*prepared\.json"):
        register_model(shared["cfg"], model_dir, data_dir, eval_dir, run_id="pipeline-run-3")
    assert [v.version for v in shared["registry"].versions()] == ["1", "2"]


def test_empty_registry_has_no_champion_and_no_versions(tmp_path: Path, new_store: NewStore) -> None:
    registry = Registry(_registry_config(tmp_path, name="never-registered", tracking_uri=new_store(tmp_path)))

    assert registry.champion("dev", legacy=True) is None
    assert registry.challenger() is None
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="version 1 of never-registered not found"):
        registry.get("1")
    assert not (Path.cwd() / "mlruns").exists()


def test_sqlite_registry_in_an_uncreatable_folder_is_unreachable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    cfg = _registry_config(blocker / "state")
    registry = Registry(cfg)  # construction is lazy and never fails on the back end

    with pytest.raises(
        RegistryError, match=r"registry unreachable at sqlite:///.*not-a-folder/state/mlflow\.db"
    ):
        registry.champion("dev")


def test_database_server_that_is_down_is_unreachable_and_password_is_masked(tmp_path: Path) -> None:
    cfg = RegistryConfig(
        tracking_uri="postgresql://refinery:s3cret@localhost:1/mlflow",
        artifact_location=str(tmp_path / "mlartifacts"),
    )

    with pytest.raises(
        RegistryError, match=r"registry unreachable at postgresql://refinery:\*\*\*@localhost:1/mlflow"
    ) as info:
        Registry(cfg).versions()
    assert "s3cret" not in str(info.value)


def test_unresolved_config_is_refused() -> None:
    with pytest.raises(RegistryError, match=r"registry\.tracking_uri is empty"):
        Registry(RegistryConfig())


def test_postgres_that_refuses_connections_fails_fast_naming_the_masked_url(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the connection is refused at once
    cfg = RegistryConfig(
        tracking_uri=f"postgresql+psycopg://refinery:s3cret@127.0.0.1:{port}/mlflow",
        artifact_location=str(tmp_path / "mlartifacts"),
    )
    began = time.perf_counter()

    with pytest.raises(
        RegistryError,
        match=rf"registry unreachable at postgresql\+psycopg://refinery:\*\*\*@127\.0\.0\.1:{port}/mlflow: "
        r".*Connection refused",
    ) as info:
        Registry(cfg).versions()
    # Not MLflow's own engine creation, which retries for about 100 s.
    assert time.perf_counter() - began < 5
    assert "s3cret" not in str(info.value)


def test_postgres_that_never_answers_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    from refinery.registry.mlflow_registry import _CONNECT_TIMEOUT_S

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        # The kernel accepts the TCP connection into the backlog; nothing ever answers the startup packet.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        cfg = RegistryConfig(
            tracking_uri=f"postgresql+psycopg://refinery@127.0.0.1:{port}/mlflow",
            artifact_location=str(tmp_path / "mlartifacts"),
        )
        began = time.perf_counter()
        with pytest.raises(
            RegistryError, match=rf"registry unreachable at .*127\.0\.0\.1:{port}/mlflow: .*time"
        ):
            Registry(cfg).champion("dev")
        assert time.perf_counter() - began < _CONNECT_TIMEOUT_S + 5


def test_missing_postgres_database_is_named(postgres_server: PostgresServer, tmp_path: Path) -> None:
    cfg = _registry_config(tmp_path, tracking_uri=postgres_server.url("no_such_db"))

    with pytest.raises(
        RegistryError, match=r"registry unreachable at postgresql\+psycopg://.*/no_such_db: .*does not exist"
    ):
        Registry(cfg).champion("dev")


def test_a_version_carries_its_validation_gate_image_and_model_card(
    tmp_path: Path, tiny_model_dir: Path, new_store: NewStore, demo_df: pd.DataFrame
) -> None:
    from mlflow import MlflowClient

    from refinery.data.validate import validate_data
    from refinery.evaluation.gate import decide
    from refinery.version import image_tag

    cfg = config_in(tmp_path, tiny_model_dir, demo_df, [f"registry.tracking_uri={new_store(tmp_path)}"])
    model_dir, data_dir, eval_dir = _write_inputs(tmp_path / "run", tiny_model_dir, macro_f1_hint=5)
    validate_data(cfg, tmp_path / "validation")
    decision = decide(cfg.gate, EvaluationResult.from_json(eval_dir))
    decision.write_json(tmp_path / "gate" / "decision.json")

    version = register_model(
        cfg,
        model_dir,
        data_dir,
        eval_dir,
        run_id="pipeline-run-9",
        validation_dir=tmp_path / "validation",
        decision_dir=tmp_path / "gate",
    )

    assert version.tags["validation"] == "passed, 0 warning(s)"
    assert version.tags["gate"] == f"passed: {len(decision.rules)} of {len(decision.rules)} rules held"
    assert version.tags["image_tag"] == image_tag()
    uri = cfg.registry.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    card = client.get_model_version(cfg.registry.model_name, version.version).description
    for section in (
        "## Intended use",
        "## Data",
        "## Metrics (test set)",
        "## Promotion gate",
        "## Limitations",
    ):
        assert section in card
    assert "| min.macro_f1 | 1.0000 | >= 0.6000 | pass |" in card
    assert "`pipeline-run-9`" in card and f"`{'ab' * 32}`" in card
    logged = Path(client.download_artifacts(version.run_id, "model_card.md", str(tmp_path / "dl")))
    assert logged.read_text() == card

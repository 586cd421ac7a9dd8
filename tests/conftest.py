"""Shared fixtures: demo data, a tiny locally built model, and a per-test config with its own state folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pytest

# A throwaway PostgreSQL server and per-test databases: postgres_server, postgres_url, sql_url; and the
# network services of a cluster on loopback: object_store, mlflow_server, git_server, oci_registry.
pytest_plugins = ["tests.postgres", "tests.cluster_services"]

# Tests never touch the network or phone home; set before any library reads them.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO_ROOT / "configs" / "test.yaml"
LABELS = ("negative", "positive")


def config_in(root: Path, model_dir: Path, data: pd.DataFrame | None = None, extra: Sequence[str] = ()):
    """configs/test.yaml with its state under ``root/state`` and data at ``root/reviews.csv``.

    ``data``, when given, is written there first; ``extra`` are further ``--set`` overrides.
    """
    from refinery.config import load_config

    data_path = root / "reviews.csv"
    if data is not None:
        data.to_csv(data_path, index=False)
    overrides = [f"state_dir={root / 'state'}", f"data.uri={data_path}", f"model.base={model_dir}", *extra]
    return load_config(TEST_CONFIG, overrides, base=REPO_ROOT)


@pytest.fixture(scope="session")
def demo_df() -> pd.DataFrame:
    from refinery.data.demo import generate_reviews

    return generate_reviews(n=600, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, demo_df: pd.DataFrame) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), list(demo_df["text"]), LABELS)


@pytest.fixture
def make_config(tmp_path: Path, tiny_model_dir: Path, demo_df: pd.DataFrame) -> Callable[..., object]:
    """Factory for a resolved RunConfig with its own state folder under tmp_path."""

    def _make(overrides: list[str] | None = None, data: pd.DataFrame | None = None):
        return config_in(tmp_path, tiny_model_dir, demo_df if data is None else data, overrides or [])

    return _make

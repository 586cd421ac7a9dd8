"""Shared fixtures: demo data, a tiny locally built model, and a per-test config with its own state folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

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
LABELS = ("negative", "positive")


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
    from refinery.config import load_config

    def _make(overrides: list[str] | None = None, data: pd.DataFrame | None = None):
        data_path = tmp_path / "reviews.csv"
        (demo_df if data is None else data).to_csv(data_path, index=False)
        return load_config(
            REPO_ROOT / "configs" / "test.yaml",
            [
                f"state_dir={tmp_path / 'state'}",
                f"data.uri={data_path}",
                f"model.base={tiny_model_dir}",
                *(overrides or []),
            ],
            base=REPO_ROOT,
        )

    return _make

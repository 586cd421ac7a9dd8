"""One packaged Bento for all serving tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.serving.serving_support import Packaged, package_for_tests


@pytest.fixture(scope="session")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, demo_df: pd.DataFrame
) -> Packaged:
    """The tiny model packaged as a Bento (version 7) plus a newer model in the same store (version 8)."""
    return package_for_tests(tmp_path_factory.mktemp("serving"), tiny_model_dir, demo_df)

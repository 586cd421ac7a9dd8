"""The packaged Bento the serving tests share (building one takes a few seconds), and its limits."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tests.conftest import config_in

from refinery.config import RunConfig
from refinery.monitoring.inference_log import InferenceLog
from refinery.packaging.bento import PackageResult, fetch, package

MODEL_VERSION = "7"
NEWER_VERSION = "8"
MAX_TEXT_CHARS = 200
MAX_BATCH_ITEMS = 8


@dataclass(frozen=True)
class Packaged:
    """A Bento of model version 7, and a newer model (version 8) packaged after it, both fetched from the
    Bento store into the same BentoML home, as `refinery serve` does."""

    cfg: RunConfig
    result: PackageResult
    newer: PackageResult

    @property
    def home(self) -> Path:
        return Path(str(self.cfg.packaging.bentoml_home))

    @property
    def bento_dir(self) -> Path:
        name, version = self.result.bento_tag.split(":")
        return self.home / "bentos" / name / version


def package_for_tests(root: Path, tiny_model_dir: Path, demo_df: pd.DataFrame) -> Packaged:
    """Package the tiny model (version 7) and then a changed copy of it (version 8) under ``root``."""
    cfg = config_in(
        root,
        tiny_model_dir,
        demo_df,
        [f"serving.max_text_chars={MAX_TEXT_CHARS}", f"serving.max_batch_items={MAX_BATCH_ITEMS}"],
    )
    result = package(cfg, tiny_model_dir, MODEL_VERSION)
    newer_dir = root / "newer-model"
    shutil.copytree(tiny_model_dir, newer_dir)
    (newer_dir / "README.md").write_text("a later model: other files, other digest\n")
    newer = package(cfg, newer_dir, NEWER_VERSION)
    for bento in (result, newer):
        fetch(bento, Path(str(cfg.packaging.bentoml_home)))
    return Packaged(cfg, result, newer)


def wait_for_rows(log: InferenceLog, expected: int, timeout_s: float = 30.0) -> int:
    """Wait until the inference log holds ``expected`` predictions (the service writes them off the request
    path, a moment after it answers); return the count, which the caller asserts."""
    import time

    deadline = time.monotonic() + timeout_s
    while (count := log.count()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count

"""packaging.runtime onnx-int8: the int8 export serves only when it agrees with fp32 on the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.unit.packaging.test_onnx import train_briefly

from refinery import config as config_module
from refinery.errors import PackagingError
from refinery.packaging import onnx_export
from refinery.packaging.runtime import ONNX_INT8, TORCH, choose_runtime
from refinery.serving.onnx import ONNX_FILE


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, demo_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_briefly(tiny_model_dir, tmp_path_factory.mktemp("runtime") / "model", demo_df)


@pytest.fixture
def data_dir(tmp_path: Path, demo_df: pd.DataFrame) -> Path:
    folder = tmp_path / "dataset"
    folder.mkdir()
    demo_df.iloc[400:][["text", "label"]].to_parquet(folder / "test.parquet")
    return folder


def _config(make_config, **onnx: float) -> config_module.RunConfig:  # type: ignore[no-untyped-def]
    sets = ["packaging.runtime=onnx-int8"] + [f"packaging.onnx.{k}={v}" for k, v in onnx.items()]
    return make_config(sets)


def test_an_agreeing_int8_export_is_accepted_and_recorded(
    make_config, trained: Path, data_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(make_config, min_agreement=0.9, max_macro_f1_drop=0.05)
    choice = choose_runtime(cfg, trained, data_dir, tmp_path / "work")

    assert choice.runtime == ONNX_INT8
    assert (choice.model_dir / ONNX_FILE).is_file()
    assert not (trained / ONNX_FILE).exists(), "the registered model folder is left as it was"
    assert choice.agreement is not None and choice.agreement.rows == 200
    tags = choice.tags()
    assert tags["serving.runtime"] == ONNX_INT8
    assert tags["serving.onnx.verdict"] == "accepted"
    assert float(tags["serving.onnx.agreement"]) >= 0.9


def test_a_damaged_export_is_refused_and_torch_serves(
    make_config, trained: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import numpy_helper

    real_export = onnx_export.export_int8

    def damaged_export(model_dir: Path, out_dir: Path, max_length: int) -> Path:
        # The real export, then its classifier weights overwritten: a broken export that still loads.
        path = real_export(model_dir, out_dir, max_length)
        graph = onnx.load(str(path))
        rng = np.random.default_rng(0)
        for init in graph.graph.initializer:
            values = numpy_helper.to_array(init)
            if "classifier" in init.name and values.ndim >= 1:
                if values.dtype.kind == "f":
                    damaged = (values + rng.normal(0, 5, values.shape)).astype(values.dtype)
                else:
                    damaged = (-values.astype(np.int32)).clip(-127, 127).astype(values.dtype)
                init.CopyFrom(numpy_helper.from_array(damaged, init.name))
        onnx.save(graph, str(path))
        return path

    monkeypatch.setattr(onnx_export, "export_int8", damaged_export)
    cfg = _config(make_config, min_agreement=0.99, max_macro_f1_drop=0.01)
    choice = choose_runtime(cfg, trained, data_dir, tmp_path / "work")

    assert choice.runtime == TORCH
    assert choice.model_dir == trained
    assert choice.refused
    verdict = choice.tags()["serving.onnx.verdict"]
    assert verdict.startswith("refused: agreement ")
    assert "< min_agreement 0.990" in verdict


def test_onnx_int8_without_a_test_split_is_an_error(make_config, trained: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(make_config)
    with pytest.raises(PackagingError, match="needs the test split"):
        choose_runtime(cfg, trained, tmp_path / "no-dataset", tmp_path / "work")


def test_torch_is_the_default_and_exports_nothing(make_config, trained: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    choice = choose_runtime(make_config(), trained, None, tmp_path / "work")
    assert (choice.runtime, choice.model_dir, choice.agreement) == (TORCH, trained, None)
    assert choice.tags() == {"serving.runtime": TORCH}

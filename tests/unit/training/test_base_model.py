"""Base models from a directory or a URI: downloaded once into the cache, safetensors only."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from refinery.errors import TrainingError
from refinery.training.base_model import SOURCE_FILE, cache_folder, resolve_base


def upload(model_dir: Path, extra: dict[str, bytes] | None = None) -> str:
    """Copy a model folder to a fresh memory:// location, plus ``extra`` files; its URI."""
    uri = f"memory://models-{uuid.uuid4().hex}/tiny-bert"
    fs = fsspec.filesystem("memory")
    for path in model_dir.iterdir():
        if path.is_file():
            fs.pipe(f"{uri}/{path.name}", path.read_bytes())
    for name, content in (extra or {}).items():
        fs.pipe(f"{uri}/{name}", content)
    return uri


def test_a_local_directory_or_file_uri_is_used_in_place(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_base(str(tiny_model_dir), tmp_path / "cache") == tiny_model_dir
    assert resolve_base(tiny_model_dir.as_uri(), tmp_path / "cache") == tiny_model_dir
    assert not (tmp_path / "cache").exists()


def test_a_remote_model_is_downloaded_once_without_pickled_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    uri = upload(tiny_model_dir, {"pytorch_model.bin": b"pickle", "training_args.pt": b"pickle"})
    local = resolve_base(uri, tmp_path / "cache")
    assert local == cache_folder(uri, tmp_path / "cache") and local.name.startswith("tiny-bert-")
    assert (local / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert not list(local.glob("*.bin")) and not list(local.glob("*.pt"))
    assert (local / SOURCE_FILE).is_file()

    # The second run uses the cache: it works even once the source is gone.
    fsspec.filesystem("memory").rm(uri, recursive=True)
    assert resolve_base(uri, tmp_path / "cache") == local

    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(
        local, use_safetensors=True, local_files_only=True
    )


def test_bad_remote_models_are_refused_and_leave_no_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(TrainingError, match=r"base model not found: memory://nowhere/model \(model.base\)"):
        resolve_base("memory://nowhere/model", cache)
    pickled_only = f"memory://models-{uuid.uuid4().hex}/old-bert"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{pickled_only}/config.json", (tiny_model_dir / "config.json").read_bytes())
    fs.pipe(f"{pickled_only}/pytorch_model.bin", b"pickle")
    with pytest.raises(
        TrainingError, match=r"holds no model.safetensors; only safetensors weights are loaded"
    ):
        resolve_base(pickled_only, cache)
    assert list(cache.iterdir()) == []

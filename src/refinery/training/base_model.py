"""Where the base model comes from: a local directory, or a URI downloaded once into a cache.

``model.base`` may be a local directory (or ``file://`` URI), any fsspec URI (``s3://``, ``gs://``,
``https://`` listings are not supported: use a bucket), or ``hf://<org>/<name>`` for a model hub
repository (huggingface_hub's fsspec filesystem; a token comes from ``HF_TOKEN``). A remote model is
copied into ``model.cache_dir`` (on a cluster: a PVC shared by the run's tasks) under a folder named
after the URI, file by file into a staging folder that is renamed into place only when complete
(:func:`refinery.atomic.staged_dir`), so a cached model is always whole and a second run does not
download again.

Only what loading needs is copied: configuration and tokenizer files and safetensors weights. Pickled
weights (``*.bin``, ``*.pt``, ``*.ckpt``) are never downloaded or loaded; a model that has no
safetensors weights is refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath

from refinery.atomic import staged_dir
from refinery.errors import TrainingError
from refinery.modeling import has_safetensors

# Files a transformers model and its tokenizer load from, and nothing that unpickles.
WANTED = ("*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "merges.txt", "vocab.*")
UNSAFE = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack")
SOURCE_FILE = ".refinery-source.json"


def is_remote(base: str) -> bool:
    """Whether ``model.base`` names a URI other than a local ``file://`` path."""
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", base)) and not base.startswith("file://")


def cache_folder(base: str, cache_dir: str | Path) -> Path:
    """The cache folder of a remote base model: its last path part and a hash of the whole URI."""
    name = PurePosixPath(base.split("://", 1)[1].rstrip("/")).name or "model"
    digest = hashlib.sha256(base.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}"


def check_model_dir(path: Path, base: str) -> Path:
    """``path`` if it holds a transformers model with safetensors weights.

    Raises:
        TrainingError: It is missing, has no config.json, or has no safetensors weights.
    """
    if not path.is_dir():
        raise TrainingError(f"base model directory not found: {path} (model.base)")
    if not (path / "config.json").is_file():
        raise TrainingError(f"base model {path} (model.base) has no config.json; is it a transformers model?")
    if not has_safetensors(path):
        raise TrainingError(
            f"base model {path} (model.base) holds no model.safetensors; only safetensors weights are loaded"
        )
    return path


def _wanted(relative: str) -> bool:
    name = PurePosixPath(relative).name
    if any(fnmatch.fnmatch(name, pattern) for pattern in UNSAFE):
        return False
    return any(fnmatch.fnmatch(name, pattern) for pattern in WANTED)


def _download(base: str, target: Path) -> list[str]:
    """Copy the wanted files under ``base`` into ``target`` (created); the relative paths copied."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(base)
        if not fs.isdir(root):
            raise TrainingError(f"base model not found: {base} (model.base) is not a folder")
        files = [f for f in fs.find(root) if _wanted(str(PurePosixPath(f).relative_to(PurePosixPath(root))))]
        copied = []
        for remote in files:
            relative = str(PurePosixPath(remote).relative_to(PurePosixPath(root)))
            local = target / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))
            copied.append(relative)
    except TrainingError:
        raise
    except Exception as exc:  # fsspec back-ends raise their own errors (ClientError, HfHubHTTPError, ...)
        raise TrainingError(
            f"cannot download base model {base} (model.base): {type(exc).__name__}: {exc}"
        ) from exc
    return sorted(copied)


def resolve_base(base: str, cache_dir: str | Path) -> Path:
    """The local directory of the base model named by ``model.base``, downloading it once if remote.

    Args:
        base: A local directory, ``file://`` URI, fsspec URI or ``hf://org/name``.
        cache_dir: ``model.cache_dir``: where remote models are kept.

    Returns:
        A directory holding config.json, tokenizer files and safetensors weights.

    Raises:
        TrainingError: The model is missing, cannot be downloaded, or has no safetensors weights. A failed
            download leaves nothing in the cache.
    """
    if not is_remote(base):
        return check_model_dir(Path(base.removeprefix("file://")), base)
    folder = cache_folder(base, cache_dir)
    if (folder / SOURCE_FILE).is_file():
        return check_model_dir(folder, base)
    try:
        with staged_dir(folder, mode="create") as staging:
            copied = _download(base, staging)
            check_model_dir(staging, base)
            (staging / SOURCE_FILE).write_text(json.dumps({"uri": base, "files": copied}, indent=2) + "\n")
            os.chmod(staging, 0o755)
    except OSError:
        # Another task finished the same download first: use its copy.
        if not (folder / SOURCE_FILE).is_file():
            raise
    return check_model_dir(folder, base)

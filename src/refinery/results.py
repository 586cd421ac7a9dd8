"""Writing stage results as JSON next to their artifacts, atomically."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from refinery.errors import RefineryError

T = TypeVar("T")


def to_jsonable(obj: Any) -> Any:
    """Turn a dataclass, pydantic model, Path or container of them into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(to_jsonable(obj), fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_result(
    from_dict: Callable[[dict[str, Any]], T],
    path: str | Path,
    *,
    default_name: str,
    what: str,
    error: type[RefineryError] = RefineryError,
) -> T:
    """Read a stage result written by :func:`write_json` and rebuild it with ``from_dict``.

    Args:
        from_dict: Builds the result from the JSON object, e.g. ``EvaluationResult.from_dict``.
        path: The JSON file, or the directory holding ``default_name``.
        default_name: The result's file name inside its directory (e.g. ``evaluation.json``).
        what: What the file holds, for messages (e.g. ``"evaluation result"``).
        error: The exception class to raise.

    Raises:
        RefineryError: (as ``error``) the file is missing, or is not JSON ``from_dict`` accepts; the
            message names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    try:
        return from_dict(read_json(path))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise error(f"{path} is not {article} {what}: {exc!r}") from None

"""Stage results: one mechanism turns them into JSON and back.

A stage's result is a frozen dataclass that inherits :class:`Record`. Writing it walks its fields
(:func:`to_jsonable`); reading it validates the JSON against the same type hints with pydantic's
``TypeAdapter``, so a new field is one edit: the field itself. Files are written atomically
(:func:`refinery.atomic.staged_file`).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from refinery.atomic import staged_file
from refinery.errors import RefineryError

T = TypeVar("T")


def to_jsonable(obj: Any) -> Any:
    """Turn a dataclass, pydantic model, Path, datetime (ISO 8601) or container of them into plain JSON values."""
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
    if isinstance(obj, datetime.datetime | datetime.date):
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and a rename."""
    path = Path(path)
    with staged_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(to_jsonable(obj), fh, indent=2, sort_keys=False)
        fh.write("\n")
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


@functools.cache
def _adapter(cls: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


class Record:
    """Base of a stage result (a dataclass): JSON out and back with no per-class code.

    ``to_dict`` walks the fields (NaN stays a float, Paths become strings); ``from_dict`` validates with
    pydantic against the dataclass's own type hints (nested records, tuples, Paths, optional fields and
    defaults included) and ignores keys it does not know, so results written by a newer release still
    read. A class overrides ``from_dict`` only where it must accept an older layout.
    """

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values."""
        data = to_jsonable(self)
        assert isinstance(data, dict)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild the result from :meth:`to_dict`'s output.

        Raises:
            ValueError: (pydantic's ``ValidationError``) a field is missing or has the wrong type; the
                message names it.
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        result: Self = _adapter(cast(Hashable, cls)).validate_python(data)
        return result

    def write_json(self, path: str | Path) -> Path:
        """Write the result to ``path`` atomically."""
        return write_json(self, path)

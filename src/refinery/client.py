"""A small HTTP client for the serving API (standard library only), used by `refinery predict` and
`refinery feedback`."""

from __future__ import annotations

import csv
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from refinery.errors import RefineryError


class ServiceError(RefineryError):
    """The service could not be reached or answered with an error."""


def read_texts(path: str | Path, column: str, limit: int | None = None) -> list[str]:
    """Read the ``column`` of a CSV file as a list of texts."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, usecols=[column], nrows=limit)
    except (OSError, ValueError) as exc:
        raise RefineryError(f"cannot read column {column!r} from {path}: {exc}") from None
    return [str(t) for t in frame[column]]


def read_labelled(
    path: str | Path, text_column: str, label_column: str, limit: int | None = None
) -> list[tuple[str, str]]:
    """Read ``(text, label)`` pairs from a CSV file with a header row, for :meth:`ServiceClient.feedback`.

    Args:
        path: The CSV file (UTF-8, a byte-order mark is allowed).
        text_column: Header of the column holding the texts.
        label_column: Header of the column holding the labels.
        limit: Read at most this many rows; None for all.

    Returns:
        One ``(text, label)`` per row, in file order; labels are stripped of surrounding blanks, texts are
        kept exactly (feedback by text matches the exact text that was classified).

    Raises:
        RefineryError: The file cannot be read, lacks one of the columns, or a row has a blank text or
            label; the message names the file, the column and the line.
    """
    if limit is not None and limit < 0:
        raise RefineryError(f"limit must not be negative, got {limit}")
    pairs: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in (text_column, label_column) if c not in header]
            if missing:
                raise RefineryError(
                    f"{path} has no column(s) {', '.join(map(repr, missing))}; its header is "
                    f"{', '.join(map(repr, header)) or '(empty)'}"
                )
            for row in reader:
                if limit is not None and len(pairs) >= limit:
                    break
                text, label = row.get(text_column), row.get(label_column)
                for column, value in ((text_column, text), (label_column, label)):
                    if value is None or not value.strip():
                        raise RefineryError(f"{path} line {reader.line_num}: column {column!r} is blank")
                pairs.append((str(text), str(label).strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RefineryError(f"cannot read {path}: {exc}") from None
    return pairs


class ServiceClient:
    """Posts to the service's APIs (``/classify``, ``/feedback``) in batches the service accepts."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def wait_ready(self, seconds: float) -> None:
        """Poll ``/readyz`` until the service answers 200, or raise after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"service at {self.url} not ready after {seconds:.0f} s")
            time.sleep(1)

    def _post(self, route: str, payload: dict[str, Any], where: str = "") -> Any:
        """POST ``payload`` as JSON to ``route``; the decoded JSON answer.

        Raises:
            ServiceError: The service answered an error (the message names the status, ``where`` and the
                body) or could not be reached.
        """
        request = urllib.request.Request(
            f"{self.url}{route}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(
                f"{self.url}{route} answered {exc.code}{where}: {exc.read().decode(errors='replace')[:500]}"
            ) from None
        except urllib.error.URLError as exc:
            raise ServiceError(f"cannot reach {self.url}: {exc.reason}", unreachable=True) from None
        except (TimeoutError, ConnectionError) as exc:
            raise ServiceError(f"{self.url}{route} did not answer{where}: {exc}", unreachable=True) from None

    def classify(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """Classify ``texts``; returns one result per text, in order (each with its ``prediction_id``)."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            results.extend(self._post("/classify", {"texts": texts[start : start + batch_size]}))
        return results

    def feedback(self, items: list[dict[str, Any]], batch_size: int = 64) -> list[int]:
        """Send labels to ``/feedback`` in batches of ``batch_size`` items.

        Each batch is stored whole or not at all; batches sent before a failing one stay stored.

        Args:
            items: ``{"prediction_id": ..., "label": ...}`` or ``{"text": ..., "label": ...}`` each.
            batch_size: Items per request; at most the service's ``serving.max_batch_items``.

        Returns:
            The stored feedback ids, in the order of ``items``.

        Raises:
            ServiceError: A batch was refused (the message names the status, the items of that batch,
                how many earlier items were stored, and the service's reason) or the service is unreachable.
        """
        if batch_size < 1:
            raise ServiceError(f"batch_size must be at least 1, got {batch_size}")
        ids: list[int] = []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            where = f" for items[{start}:{start + len(batch)}]"
            if start:
                where += f" (its item indexes count from 0; the {start} items before it were stored)"
            answer = self._post("/feedback", {"items": batch}, where)
            ids.extend(int(i) for i in answer["feedback_ids"])
        return ids

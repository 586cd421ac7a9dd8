"""A small HTTP client for the serving API (standard library only), used by `refinery predict`."""

from __future__ import annotations

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


class ServiceClient:
    """Posts texts to ``/classify`` in batches the service accepts."""

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

    def classify(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """Classify ``texts``; returns one result per text, in order."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            body = json.dumps({"texts": texts[start : start + batch_size]}).encode()
            request = urllib.request.Request(
                f"{self.url}/classify", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    results.extend(json.loads(resp.read()))
            except urllib.error.HTTPError as exc:
                raise ServiceError(
                    f"{self.url}/classify answered {exc.code}: {exc.read().decode()[:500]}"
                ) from None
            except urllib.error.URLError as exc:
                raise ServiceError(f"cannot reach {self.url}: {exc.reason}") from None
        return results

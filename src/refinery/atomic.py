"""Write into a temporary file or folder, then publish it in one step: readers see all of it or nothing.

Every stage that leaves files for another (validation reports, prepared splits, models, evaluations,
checkpoints, downloaded base models, Bentos, JSON results) publishes them through these two context
managers, so the rules are written once:

- the staging file or folder sits beside its target (same filesystem, so the final rename is atomic);
- if the body raises, the staging copy is removed and the target is left as it was;
- a file is made readable by others (0644) and a folder listable (0755), since the next reader may be
  another user (a serving pod).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the body returns it replaces ``target``.

    The temporary file exists (empty) when the body starts; write it or replace it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        os.chmod(staging, 0o644)  # mkstemp creates 0600
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(
    target: str | Path,
    *,
    mode: Literal["replace", "merge", "create"] = "replace",
    last: str | None = None,
) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; when the body returns, publish it as ``target``.

    Args:
        target: The folder to publish.
        mode: What to do when ``target`` already holds files:

            - ``"replace"``: swap the folders; the old one is moved aside first and put back if the swap
              fails, then removed;
            - ``"merge"``: move the staged entries into the existing folder one by one, each rename atomic
              (for a folder that must keep its identity, such as a KFP output artifact's path);
            - ``"create"``: refuse with ``FileExistsError`` (another writer published first).

            An empty existing ``target`` is replaced in every mode.
        last: In ``"merge"`` mode, the entry moved last: the one readers look for (e.g. a result JSON).

    Raises:
        FileExistsError: ``mode="create"`` and ``target`` holds files.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp creates 0700; the folder becomes the target, read by others
    try:
        yield staging
        _publish_dir(staging, target, mode, last)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish_dir(staging: Path, target: Path, mode: str, last: str | None) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.rename(staging, target)
        return
    if mode == "create":
        raise FileExistsError(f"{target} already exists")
    if mode == "merge":
        names = sorted((p.name for p in staging.iterdir()), key=lambda n: (n == last, n))
        for name in names:
            destination = target / name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(staging / name, destination)
        staging.rmdir()
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)

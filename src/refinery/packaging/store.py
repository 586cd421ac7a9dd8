"""The Bento store: exported Bentos (``.bento`` archives holding the service, its model and its pinned
requirements) in a folder or in object storage, addressed by URI.

It is the one place a Bento travels through: the ``package`` step publishes it, ``promote`` checks it
is there before the GitOps commit names it, and the serving container fetches it at start-up
(``refinery serve``). Nothing reads a Bento from another process's disk. A file appears whole or not at
all: a local store writes beside the target and renames it into place (:mod:`refinery.atomic`); an
object store's PUT is atomic. Every failure is a :class:`~refinery.errors.PackagingError` naming the URI.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from refinery.atomic import staged_file
from refinery.errors import PackagingError, is_connection_failure
from refinery.hashing import stream_sha256


def _fs(uri: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise PackagingError(f"Bento store {uri}: cannot open it ({exc})") from None


def _failed(uri: str, action: str, exc: BaseException) -> PackagingError:
    return PackagingError(
        f"Bento store: cannot {action} {uri}: {type(exc).__name__}: {exc}",
        unreachable=is_connection_failure(exc),
    )


def bento_uri(store: str, bento_tag: str) -> str:
    """Where a Bento lives in ``store``: ``<store>/<name>/<version>.bento``."""
    name, _, version = bento_tag.partition(":")
    return f"{store.rstrip('/')}/{name}/{version}.bento"


def exists(uri: str) -> bool:
    """Whether the store holds a file at ``uri``."""
    fs, path = _fs(uri)
    try:
        return bool(fs.isfile(path))
    except Exception as exc:  # fsspec back-ends raise their own errors (ClientError, OSError, ...)
        raise _failed(uri, "look up", exc) from exc


def sha256(uri: str) -> str:
    """SHA-256 of the file at ``uri``, streamed.

    Raises:
        PackagingError: The file is missing or cannot be read.
    """
    fs, path = _fs(uri)
    try:
        with fs.open(path, "rb") as fh:
            return stream_sha256(fh)
    except FileNotFoundError:
        raise PackagingError(f"Bento store: {uri} does not exist") from None
    except Exception as exc:
        raise _failed(uri, "read", exc) from exc


def file_sha256(path: Path) -> str:
    """SHA-256 of a local file, streamed."""
    with open(path, "rb") as fh:
        return stream_sha256(fh)


def publish(local: Path, uri: str) -> None:
    """Put the local file ``local`` at ``uri`` so that readers see all of it or nothing.

    Raises:
        PackagingError: The store cannot be written.
    """
    fs, path = _fs(uri)
    try:
        if "file" in fs.protocol or "local" in fs.protocol:
            # Readable by others (0644): the serving process may be another user.
            with staged_file(Path(path)) as staging:
                shutil.copyfile(local, staging)
        else:
            fs.put_file(str(local), path)
    except Exception as exc:
        raise _failed(uri, "write", exc) from exc


def fetch(uri: str, local: Path, expected_sha256: str) -> Path:
    """Download ``uri`` to ``local`` and check its SHA-256 (the one recorded when it was published).

    Raises:
        PackagingError: The file is missing, cannot be read, or its content differs from what was
            published (the partial or wrong file is removed).
    """
    fs, path = _fs(uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs.get_file(path, str(local))
    except FileNotFoundError:
        raise PackagingError(f"Bento store: {uri} does not exist") from None
    except Exception as exc:
        local.unlink(missing_ok=True)
        raise _failed(uri, "download", exc) from exc
    actual = file_sha256(local)
    if actual != expected_sha256:
        local.unlink(missing_ok=True)
        raise PackagingError(
            f"Bento store: {uri} has SHA-256 {actual[:12]}..., not the {expected_sha256[:12]}... recorded when"
            " it was packaged; it was changed or damaged"
        )
    return local

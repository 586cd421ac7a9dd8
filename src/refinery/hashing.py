"""One way to hash a stream of bytes: SHA-256 in 1 MiB chunks, for files of any size and any store."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

CHUNK = 1 << 20


def stream_sha256(stream: BinaryIO) -> str:
    """The hex SHA-256 of what is left to read in ``stream``."""
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()

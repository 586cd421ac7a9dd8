"""Which refinery this is: the package version, the source commit, and the image tag made of both.

The image tag is defined here and nowhere else: the Makefile asks `refinery images` for it, the
pipeline's components are built with it, and `refinery compile --image` overrides it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# Set in the project image at build time (there is no .git inside an image).
SHA_ENV = "REFINERY_GIT_SHA"
_SOURCE = Path(__file__).resolve().parents[2]
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def package_version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("refinery")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def source_sha() -> str:
    """The commit refinery's source comes from, or ``"unknown"``.

    Inside an image it is the build argument baked into ``REFINERY_GIT_SHA``; in a checkout it is
    ``git rev-parse HEAD`` of the checkout holding this file (not of the working directory).
    """
    baked = os.environ.get(SHA_ENV, "").strip()
    if _SHA.fullmatch(baked):
        return baked
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_SOURCE, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = completed.stdout.strip()
    return sha if completed.returncode == 0 and _SHA.fullmatch(sha) else "unknown"


def image_tag() -> str:
    """``<version>-<sha12>`` (``<version>`` alone when the commit is unknown)."""
    sha = source_sha()
    return package_version() if sha == "unknown" else f"{package_version()}-{sha[:12]}"


#: podman's name for images in its local storage; no registry serves them.
LOCAL_REGISTRY = "localhost"


@dataclass(frozen=True)
class Images:
    """The images pipeline steps run on: the project image, which also serves the promoted models, and
    its CUDA variant for fine-tuning."""

    project: str
    gpu: str

    @classmethod
    def default(cls, tag: str | None = None, registry: str = LOCAL_REGISTRY) -> Images:
        """This release's images under ``registry`` (default: podman's local storage). Names are fully
        qualified: kfp compares them exactly and would otherwise try to pull."""
        tag = tag or image_tag()
        prefix = registry.rstrip("/")
        return cls(project=f"{prefix}/refinery:{tag}", gpu=f"{prefix}/refinery-gpu:{tag}")

    def local(self) -> list[str]:
        """The names that point at podman's local storage, which no cluster can pull from."""
        return [image for image in (self.project, self.gpu) if image.startswith(f"{LOCAL_REGISTRY}/")]

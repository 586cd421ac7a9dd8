"""What the GitOps repository names: every overlay of the main branch and every review branch.

:func:`read_state` reads them from one clone, for ``refinery models sync`` and ``refinery status``.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from refinery.config import GitOpsConfig
from refinery.errors import GitOpsError
from refinery.gitops.change import environments_in_tree
from refinery.gitops.git import authenticated, clone, git, head, redact
from refinery.gitops.overlay import Release, overlay_path, release_from_text
from refinery.gitops.review import REVIEW_PREFIX
from refinery.gitops.seed import ensure_repository
from refinery.results import Record


@dataclass(frozen=True)
class Overlay(Record):
    """One environment's overlay at the head of the main branch.

    Attributes:
        environment: The folder name under ``k8s/overlays``.
        release: What it serves; None when nothing was ever released there, or it cannot be read.
        commit: The last commit of the main branch that changed the overlay.
        namespace: The kustomization's ``namespace`` ("" when it sets none).
        name_prefix: Its ``namePrefix`` ("" for none): the Deployment is ``<prefix>refinery-serving<suffix>``.
        name_suffix: Its ``nameSuffix`` ("" for none).
        error: Why the release could not be read ("" when it could).
    """

    environment: str
    release: Release | None
    commit: str
    namespace: str = ""
    name_prefix: str = ""
    name_suffix: str = ""
    error: str = ""


@dataclass(frozen=True)
class ReviewBranch(Record):
    """A ``promote/<environment>/...`` branch a protected promotion pushed.

    Attributes:
        name: The branch, e.g. ``promote/prod/review-sentiment-v4``.
        environment: The environment its name is for.
        commit: Its head.
        release: What the environment's overlay names at its head (None: nothing, or unreadable).
        merged: Its head is in the main branch, or the main branch's overlay names the same release
            (a squash merge): it no longer waits for review.
    """

    name: str
    environment: str
    commit: str
    release: Release | None
    merged: bool


@dataclass(frozen=True)
class GitOpsState(Record):
    """Every overlay of the main branch and every review branch, read from one clone.

    Attributes:
        repository: The GitOps repository (credentials masked).
        branch: The main branch (``gitops.branch``).
        head: Its head.
        overlays: One per environment, by name.
        review_branches: Every ``promote/...`` branch, by name.
    """

    repository: str
    branch: str
    head: str
    overlays: tuple[Overlay, ...]
    review_branches: tuple[ReviewBranch, ...]

    def overlay(self, environment: str) -> Overlay | None:
        """The overlay of ``environment``, or None when the repository has none."""
        return next((o for o in self.overlays if o.environment == environment), None)

    def pending(self, environment: str) -> list[ReviewBranch]:
        """The review branches of ``environment`` that are not merged."""
        return [b for b in self.review_branches if b.environment == environment and not b.merged]


@authenticated
def read_state(cfg: GitOpsConfig) -> GitOpsState:
    """Every environment's overlay at the head of ``cfg.branch`` and every review branch, from one clone.

    A local repository is created from the seed on first use, like :func:`ensure_repository`. An
    overlay whose release literals cannot be read is reported with its error, not raised.

    Raises:
        GitOpsError: The repository cannot be reached or read.
    """
    location = ensure_repository(cfg)
    with tempfile.TemporaryDirectory(prefix="refinery-gitops-") as tmp:
        work = Path(tmp) / "work"
        # The whole history of the branch: each overlay's last change, and which review branches it holds.
        clone(cfg, location, work, history=True)
        tip = head(work, cfg, location)
        overlays = [
            _read_overlay(cfg, location, work, environment, tip) for environment in environments_in_tree(work)
        ]
        branches = _read_review_branches(cfg, location, work, {o.environment: o.release for o in overlays})
    return GitOpsState(redact(location), cfg.branch, tip, tuple(overlays), tuple(branches))


def _read_overlay(cfg: GitOpsConfig, location: str, work: Path, environment: str, tip: str) -> Overlay:
    path = overlay_path(environment)
    text = (work / path).read_text(encoding="utf-8")
    changed = git(["log", "-1", "--format=%H", "HEAD", "--", path], cfg, location, cwd=work)
    release, error = None, ""
    try:
        release = release_from_text(text, f"{redact(location)}:{path}")
    except GitOpsError as exc:
        error = str(exc)
    data: dict[str, Any] = {}
    with contextlib.suppress(yaml.YAMLError):
        loaded = yaml.safe_load(text)
        data = loaded if isinstance(loaded, dict) else {}
    return Overlay(
        environment,
        release,
        changed.stdout.strip() or tip,
        str(data.get("namespace") or ""),
        str(data.get("namePrefix") or ""),
        str(data.get("nameSuffix") or ""),
        error,
    )


def _read_review_branches(
    cfg: GitOpsConfig, location: str, work: Path, main_releases: dict[str, Release | None]
) -> list[ReviewBranch]:
    git(
        ["fetch", "--quiet", "origin", f"+refs/heads/{REVIEW_PREFIX}*:refs/remotes/origin/{REVIEW_PREFIX}*"],
        cfg,
        location,
        cwd=work,
    )
    listed = git(
        ["for-each-ref", "--format=%(refname:strip=3) %(objectname)", f"refs/remotes/origin/{REVIEW_PREFIX}"],
        cfg,
        location,
        cwd=work,
    )
    branches = []
    for line in listed.stdout.splitlines():
        name, _, tip = line.partition(" ")
        environment = name.removeprefix(REVIEW_PREFIX).partition("/")[0]
        path = overlay_path(environment)
        shown = git(["show", f"{tip}:{path}"], cfg, location, cwd=work, check=False)
        proposed = None
        if shown.returncode == 0:
            with contextlib.suppress(GitOpsError):
                proposed = release_from_text(shown.stdout, f"{name}:{path}")
        ancestor = git(["merge-base", "--is-ancestor", tip, "HEAD"], cfg, location, cwd=work, check=False)
        merged = ancestor.returncode == 0 or (
            proposed is not None and main_releases.get(environment) == proposed
        )
        branches.append(ReviewBranch(name, environment, tip, proposed, merged))
    return branches

"""One overlay change as one commit on a throwaway clone: the steps promotion and review share.

:func:`checkout` clones the branch into a temporary folder and reads the environment's overlay;
:func:`check_expected` is the compare-and-swap test on what it names; :func:`commit_release` writes the
release into it (:mod:`refinery.gitops.overlay`) and commits; :func:`push` pushes the commit to a
branch. :func:`refinery.gitops.repo.promote` pushes to ``gitops.branch``,
:func:`refinery.gitops.review.propose` to a review branch.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from refinery.config import GitOpsConfig
from refinery.errors import GitOpsError, PromotionConflict
from refinery.gitops.git import clone, git, head, redact
from refinery.gitops.overlay import (
    OVERLAYS_DIR,
    Release,
    apply_release,
    commit_message,
    overlay_path,
    release_from_text,
)

# Attempts on a fresh clone when another promotion moved (or was moving) the branch between our clone
# and our push: one retry covers two concurrent promotions, a second covers a push that only hit the
# other one's ref lock while it was still updating.
PUSH_ATTEMPTS = 3
RETRY_PAUSE_S = 0.2


@dataclass(frozen=True)
class Checkout:
    """The environment's overlay in a fresh clone.

    Attributes:
        work: The clone's working tree.
        base: The commit checked out (the branch head when cloned).
        path: The overlay's kustomization, relative to the repository root.
        where: ``<repository>:<path>`` for messages (credentials masked).
        text: The kustomization as cloned.
        previous: The release it names (None: never promoted).
    """

    work: Path
    base: str
    path: str
    where: str
    text: str
    previous: Release | None


@contextmanager
def checkout(cfg: GitOpsConfig, location: str, *, history: bool = False) -> Iterator[Checkout]:
    """Clone ``cfg.branch`` of ``location`` into a temporary folder (removed after the block) and read
    the overlay of ``cfg.environment``.

    Raises:
        GitOpsError: The environment has no overlay (the message lists the available ones), the overlay
            lacks the release literals, or a git command failed.
    """
    with tempfile.TemporaryDirectory(prefix="refinery-gitops-") as tmp:
        work = Path(tmp) / "work"
        clone(cfg, location, work, history=history)
        base = head(work, cfg, location)
        path = overlay_path(cfg.environment)
        overlay_file = work / path
        if not overlay_file.is_file():
            raise unknown_environment(cfg, location, environments_in_tree(work))
        where = f"{redact(location)}:{path}"
        text = overlay_file.read_text(encoding="utf-8")
        yield Checkout(work, base, path, where, text, release_from_text(text, where))


def check_expected(
    co: Checkout, release: Release, expected: tuple[str | None, ...] | None, action: str, *, hint: str = ""
) -> None:
    """Refuse the change when the overlay names a model version outside ``expected`` (None accepts any).

    Raises:
        PromotionConflict: It does; ``hint`` is added to the message.
    """
    named = co.previous.model_version if co.previous else None
    if expected is None or named in expected:
        return
    wanted = " or ".join("nothing released" if v is None else f"version {v}" for v in expected)
    raise PromotionConflict(
        f"cannot {action} {release.model_name} v{release.model_version}: {co.where} names "
        f"{'nothing released' if named is None else f'version {named}'} at {co.base[:12]}, "
        f"expected {wanted}; another promotion got there first{hint}"
    )


def commit_release(
    cfg: GitOpsConfig,
    location: str,
    co: Checkout,
    release: Release,
    action: str,
    reason: str,
    *,
    trailer: str = "",
) -> tuple[tuple[str, ...], str]:
    """Write ``release`` into the checked-out overlay and commit it; the changed paths and the commit.

    ``trailer`` is appended to the commit message's body.
    """
    (co.work / co.path).write_text(apply_release(co.text, release, co.where), encoding="utf-8")
    git(["add", "--", co.path], cfg, location, cwd=co.work)
    changed = tuple(git(["diff", "--cached", "--name-only"], cfg, location, cwd=co.work).stdout.split())
    subject, body = commit_message(cfg.environment, release, co.previous, co.path, action, reason)
    git(["commit", "--quiet", "-m", subject, "-m", body + trailer], cfg, location, cwd=co.work)
    return changed, head(co.work, cfg, location)


def push(cfg: GitOpsConfig, location: str, co: Checkout, branch: str) -> subprocess.CompletedProcess[str]:
    """Push the clone's head to ``branch`` of the remote; the caller reads the outcome."""
    return git(
        ["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], cfg, location, cwd=co.work, check=False
    )


def environments_in_tree(work: Path) -> list[str]:
    """The environments with an overlay in the working tree ``work``."""
    root = work / OVERLAYS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "kustomization.yaml").is_file())


def environments_at_ref(cfg: GitOpsConfig, location: str, ref: str) -> list[str]:
    """The environments with an overlay at ``ref`` of the bare repository ``location``."""
    proc = git(
        ["--git-dir", location, "ls-tree", "-r", "--name-only", ref, "--", f"{OVERLAYS_DIR}/"],
        cfg,
        location,
        check=False,
    )
    pattern = re.compile(rf"^{re.escape(OVERLAYS_DIR)}/([^/]+)/kustomization\.yaml$")
    return sorted({m.group(1) for line in proc.stdout.splitlines() if (m := pattern.match(line))})


def unknown_environment(cfg: GitOpsConfig, location: str, available: list[str]) -> GitOpsError:
    """The error for an environment the repository has no overlay for, listing those it has."""
    return GitOpsError(
        f"GitOps repository {redact(location)} has no environment {cfg.environment!r} "
        f"(no {overlay_path(cfg.environment)} on branch {cfg.branch!r}); "
        f"available environments: {', '.join(available) or '(none)'}"
    )

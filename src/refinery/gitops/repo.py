"""Promotion through GitOps: one commit per promotion to the repository Argo CD watches.

The repository holds the kustomize tree of ``k8s/`` under ``k8s/``. A promotion rewrites exactly one
file, ``k8s/overlays/<environment>/kustomization.yaml``: the ``images`` entry named
``refinery-serving`` (the serving image, pinned by digest when it comes from a registry) and the
release literals of the ``refinery-release`` ConfigMap generator (model name and version, and the
Bento's tag, store URI and SHA-256, which the serving container fetches at start). Argo CD then syncs
the overlay.

By default ``gitops.repository`` is the path of a local *bare* repository, created on first use and
seeded from ``gitops.seed_dir``. It may also be a remote (``https://``, ``ssh://``, git's scp-like
``git@host:path``, or ``file://``) that already holds the tree; then it is only checked, never seeded.
Credentials come from the environment only (:mod:`refinery.credentials`), handed to git as
:mod:`refinery.gitops.git` describes.

Everything goes through the real git CLI in throwaway clones, with author and committer set from the
configuration so that no global git configuration is needed. A push that loses a race with another is
redone on a fresh clone, so each promotion lands as its own commit; with ``expected``, :func:`promote` is
a compare-and-swap instead, which :mod:`refinery.release.promote` uses so that of two promotions
judged against the same champion only the first lands.

An environment listed in ``gitops.protected_environments`` changes only through review: :func:`propose`
makes the same commit on a fresh clone but pushes it to the branch ``promote/<environment>/<model>-v<N>``,
never to ``gitops.branch``, and names the page to compare it on (:func:`compare_url`) or the git
commands that merge it (:func:`merge_hint`). :func:`read_state` reads every overlay of the branch and
every review branch (merged or not) in one clone, for ``refinery models sync`` and ``refinery status``.

This module holds the promotion itself (:func:`promote`, :func:`revert`, :func:`current_release`) and
is the import path of the whole flow; the parts live beside it:

- :mod:`refinery.gitops.git`: the git command runner and the credentials;
- :mod:`refinery.gitops.overlay`: :class:`Release` and the overlay edit, on text;
- :mod:`refinery.gitops.change`: one overlay change as one commit on a throwaway clone;
- :mod:`refinery.gitops.seed`: :func:`ensure_repository`, creating and seeding a local repository;
- :mod:`refinery.gitops.review`: :func:`propose` and the review branches;
- :mod:`refinery.gitops.state`: :func:`read_state`.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from refinery.config import GitOpsConfig, is_git_remote
from refinery.errors import GitOpsError
from refinery.gitops.change import (
    PUSH_ATTEMPTS,
    RETRY_PAUSE_S,
    check_expected,
    checkout,
    commit_release,
    environments_at_ref,
    push,
    unknown_environment,
)
from refinery.gitops.git import authenticated, branch_moved, clone, command_error, git, head, redact
from refinery.gitops.overlay import (
    IMAGE_NAME,
    OVERLAYS_DIR,
    RELEASE_CONFIGMAP,
    UNRELEASED,
    Release,
    check_release,
    one_line,
    overlay_path,
    release_from_text,
)
from refinery.gitops.review import (
    REVIEW_PREFIX,
    ProposalResult,
    compare_url,
    merge_hint,
    propose,
    review_branch,
)
from refinery.gitops.seed import ensure_repository
from refinery.gitops.state import GitOpsState, Overlay, ReviewBranch, read_state
from refinery.results import Record

__all__ = [
    "IMAGE_NAME",
    "OVERLAYS_DIR",
    "RELEASE_CONFIGMAP",
    "REVIEW_PREFIX",
    "UNRELEASED",
    "GitOpsState",
    "Overlay",
    "PromotionResult",
    "ProposalResult",
    "Release",
    "ReviewBranch",
    "compare_url",
    "current_release",
    "ensure_repository",
    "merge_hint",
    "promote",
    "propose",
    "read_state",
    "revert",
    "review_branch",
]

# What git says when a push lost a race with another push (with LC_ALL=C).
_LOST_RACE_RE = re.compile(
    r"non-fast-forward|fetch first|cannot lock ref|failed to update ref|unable to create .*\.lock",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PromotionResult(Record):
    """The outcome of :func:`promote`.

    Attributes:
        commit: The branch head naming the release: the new commit, or the existing head when the
            release was already there (a no-op promotion makes no commit).
        environment: The overlay promoted to.
        repository: The GitOps repository (credentials in a URL are masked).
        changed_files: Paths changed by the commit, relative to the repository root; empty for a no-op.
        release: The release promoted.
    """

    commit: str
    environment: str
    repository: str
    changed_files: tuple[str, ...]
    release: Release

    @property
    def changed(self) -> bool:
        """Whether a new commit was made."""
        return bool(self.changed_files)


@authenticated
def promote(
    cfg: GitOpsConfig,
    release: Release,
    *,
    expected: tuple[str | None, ...] | None = None,
    action: str = "promote",
    reason: str = "",
) -> PromotionResult:
    """Point ``k8s/overlays/<cfg.environment>`` at ``release`` in one pushed commit.

    The commit changes only ``k8s/overlays/<environment>/kustomization.yaml``: the image
    ``release.image`` and the release literals of the ``refinery-release`` ConfigMap. If the overlay already names this release, nothing is committed and the current head is
    returned with empty ``changed_files``. If another promotion pushed in between, the edit is redone
    on a fresh clone (at most twice), so concurrent promotions land as separate commits and none is lost
    - unless ``expected`` is given: then the overlay must name one of those model versions (None: never
    released) on the clone the commit is made on, so a promotion that lost the race to another is
    refused instead (compare-and-swap on the branch).

    Args:
        cfg: The GitOps section of a resolved run configuration.
        release: The model version and Bento to serve.
        expected: Model versions the overlay may name before this commit; None accepts any.
        action: ``promote`` or ``rollback``: the commit message's verb.
        reason: Why, recorded in the commit message.

    Returns:
        The commit, the changed files and the release.

    Raises:
        PromotionConflict: The overlay names a version outside ``expected``.
        GitOpsError: The environment is protected (its changes go through :func:`propose`), the release
            is malformed, the environment has no overlay (the message lists the available ones), the
            overlay lacks the entries promote edits, or a git command failed (the message names the
            repository and git's error output).
    """
    if cfg.protected():
        raise GitOpsError(
            f"environment {cfg.environment!r} is protected (gitops.protected_environments): its overlay"
            " changes go to a review branch, never straight to the branch Argo CD syncs"
        )
    check_release(release)
    location = ensure_repository(cfg)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        with checkout(cfg, location) as co:
            if co.previous == release:
                return PromotionResult(co.base, cfg.environment, redact(location), (), release)
            check_expected(co, release, expected, action)
            changed, commit = commit_release(cfg, location, co, release, action, reason)
            pushed = push(cfg, location, co, cfg.branch)
            if pushed.returncode == 0:
                return PromotionResult(commit, cfg.environment, redact(location), changed, release)
            if attempt < PUSH_ATTEMPTS and (
                _LOST_RACE_RE.search(pushed.stderr) or branch_moved(cfg, location, co.base)
            ):
                time.sleep(RETRY_PAUSE_S * attempt)
                continue
            raise command_error(location, pushed, "rejected the promotion push")
    raise AssertionError("unreachable: every attempt returns, continues or raises")  # pragma: no cover


@authenticated
def revert(cfg: GitOpsConfig, commit: str, reason: str) -> str:
    """Undo ``commit`` with a new commit on top of it; returns the new commit's sha.

    Only the branch head can be reverted this way: a later commit may depend on it.

    Raises:
        GitOpsError: ``commit`` is not the head of ``cfg.branch`` (someone pushed since), or a git
            command failed.
    """
    location = ensure_repository(cfg)
    with tempfile.TemporaryDirectory(prefix="refinery-gitops-") as tmp:
        work = Path(tmp) / "work"
        clone(cfg, location, work)
        current = head(work, cfg, location)
        if current != commit:
            raise GitOpsError(
                f"GitOps repository {redact(location)}: cannot revert {commit[:12]}, the head of "
                f"{cfg.branch!r} is now {current[:12]}"
            )
        subject = git(["log", "-1", "--format=%s", commit], cfg, location, cwd=work).stdout.strip()
        git(["revert", "--no-edit", "--no-commit", commit], cfg, location, cwd=work)
        body = f"Reverts {commit}: {one_line(reason)}\n\nRefinery-Action: revert\nRefinery-Reverts: {commit}"
        git(["commit", "--quiet", "-m", f'revert "{subject}"', "-m", body], cfg, location, cwd=work)
        new = head(work, cfg, location)
        git(["push", "--quiet", "origin", f"HEAD:refs/heads/{cfg.branch}"], cfg, location, cwd=work)
    return new


@authenticated
def current_release(cfg: GitOpsConfig) -> Release | None:
    """Read the release that ``k8s/overlays/<cfg.environment>`` names at the head of ``cfg.branch``.

    A local bare repository is read with ``git show`` (no clone); a URL is cloned shallowly into a
    temporary folder. A local repository is created from the seed on first use, like
    :func:`ensure_repository`.

    Args:
        cfg: The GitOps section of a resolved run configuration.

    Returns:
        The release, or None when the overlay has never been promoted (model version ``none``).

    Raises:
        GitOpsError: The environment has no overlay (the message lists the available ones), the overlay
            lacks the release literals, or a git command failed.
    """
    location = ensure_repository(cfg)
    if is_git_remote(location):
        with checkout(cfg, location) as co:
            return co.previous
    overlay = overlay_path(cfg.environment)
    ref = f"refs/heads/{cfg.branch}"
    proc = git(["--git-dir", location, "show", f"{ref}:{overlay}"], cfg, location, check=False)
    if proc.returncode != 0:
        available = environments_at_ref(cfg, location, ref)
        if cfg.environment not in available:
            raise unknown_environment(cfg, location, available)
        raise command_error(location, proc, f"cannot read {overlay}")
    return release_from_text(proc.stdout, f"{redact(location)}:{overlay}")

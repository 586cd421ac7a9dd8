"""Promotion to a protected environment: the same commit, pushed to a branch for review.

An environment listed in ``gitops.protected_environments`` changes only through review: :func:`propose`
makes the commit :func:`refinery.gitops.repo.promote` would make, on a fresh clone, but pushes it to the
branch ``promote/<environment>/<model>-v<N>`` (:func:`review_branch`), never to ``gitops.branch``, and
names the page to compare it on (:func:`compare_url`) or the git commands that merge it
(:func:`merge_hint`).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass

from refinery.config import GitOpsConfig, is_git_remote
from refinery.errors import GitOpsError
from refinery.gitops.change import (
    PUSH_ATTEMPTS,
    RETRY_PAUSE_S,
    Checkout,
    check_expected,
    checkout,
    commit_release,
    push,
)
from refinery.gitops.git import authenticated, command_error, fetch_branch, git, parent, redact, remote_tip
from refinery.gitops.overlay import Release, check_release, release_from_text
from refinery.gitops.seed import ensure_repository
from refinery.results import Record

#: Prefix of the branches a promotion to a protected environment pushes for review.
REVIEW_PREFIX = "promote/"


@dataclass(frozen=True)
class ProposalResult(Record):
    """The outcome of :func:`propose`: a promotion waiting for review on its own branch.

    Attributes:
        branch: The review branch, ``promote/<environment>/<model>-v<version>``.
        commit: The review branch's head naming the release; when ``merged``, the head of the main
            branch (``gitops.branch``), which already names it.
        base: The head of the main branch the change was made on.
        environment: The overlay the change is for.
        repository: The GitOps repository (credentials in a URL are masked).
        changed_files: Paths the branch's commit changes; empty when nothing was pushed (the branch
            already held this change, or the main branch already names the release).
        release: The release proposed.
        merged: The main branch already names the release: there is nothing to review.
        compare_url: The web page comparing the branch with the main branch, when there is one.
        merge_hint: How to merge the branch without a web page (the git commands).
    """

    branch: str
    commit: str
    base: str
    environment: str
    repository: str
    changed_files: tuple[str, ...]
    release: Release
    merged: bool
    compare_url: str | None
    merge_hint: str

    @property
    def changed(self) -> bool:
        """Whether a new commit was pushed to the review branch."""
        return bool(self.changed_files)


def review_branch(environment: str, release: Release) -> str:
    """The branch a promotion of ``release`` to a protected ``environment`` is pushed to."""
    return f"{REVIEW_PREFIX}{environment}/{release.model_name}-v{release.model_version}"


def compare_url(cfg: GitOpsConfig, branch: str) -> str | None:
    """The web page comparing ``branch`` with ``cfg.branch``: ``cfg.compare_url`` filled in, else derived
    from a GitHub or GitLab repository URL (``git@github.com:acme/gitops.git`` ->
    ``https://github.com/acme/gitops/compare/main...BRANCH``); None for other hosts and local paths."""
    if cfg.compare_url:
        return cfg.compare_url.format(base=cfg.branch, branch=branch)
    web = _web_location(cfg.repository or "")
    if web is None:
        return None
    host, path = web
    if "github" in host:
        return f"https://{host}/{path}/compare/{cfg.branch}...{branch}"
    if "gitlab" in host:
        return f"https://{host}/{path}/-/compare/{cfg.branch}...{branch}"
    return None


def merge_hint(cfg: GitOpsConfig, branch: str) -> str:
    """The git commands a reviewer runs to merge ``branch`` into ``cfg.branch`` (no web page needed)."""
    location = redact(cfg.repository or "")
    return (
        f"git clone {shlex.quote(location)} gitops-review && cd gitops-review && "
        f"git merge --no-ff origin/{branch} && git push origin {cfg.branch}"
    )


@authenticated
def propose(
    cfg: GitOpsConfig,
    release: Release,
    *,
    expected: tuple[str | None, ...] | None = None,
    action: str = "promote",
    reason: str = "",
) -> ProposalResult:
    """Push the change of ``k8s/overlays/<cfg.environment>`` to ``release`` to a review branch
    (:func:`review_branch`), built on the head of ``cfg.branch``, which it leaves alone.

    The commit is the one :func:`refinery.gitops.repo.promote` would make, on a fresh clone. Nothing is
    pushed when the main branch already names the release (``merged``), or when the review branch
    already holds this change on the current head (a retried promotion). A review branch left from an
    earlier promotion that was merged since is moved forward (its head is in the main branch); one
    holding another, unmerged change is refused, naming it.

    Args:
        cfg: The GitOps section, ``environment`` being the protected one.
        release: The model version and Bento to serve.
        expected: Model versions the main branch's overlay may name (None: never released); None accepts any.
        action: ``promote`` or ``rollback``: the commit message's verb.
        reason: Why, recorded in the commit message.

    Raises:
        PromotionConflict: The main branch's overlay names a version outside ``expected``.
        GitOpsError: The release is malformed, the environment has no overlay, the review branch holds
            another unmerged change, or a git command failed.
    """
    check_release(release)
    location = ensure_repository(cfg)
    branch = review_branch(cfg.environment, release)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        # With history: a review branch merged earlier must be seen to be an ancestor of the new commit.
        with checkout(cfg, location, history=True) as co:
            if co.previous == release:
                return _proposal(cfg, location, release, co.base, co.base, (), merged=True)
            check_expected(
                co,
                release,
                expected,
                action,
                hint=" (or was merged and `refinery models sync` has not run yet)",
            )
            tip = fetch_branch(cfg, location, co.work, branch)
            if tip is not None and _holds_release(cfg, location, co, tip, release):
                return _proposal(cfg, location, release, tip, co.base, (), merged=False)
            changed, commit = commit_release(
                cfg, location, co, release, action, reason, trailer=f"\nRefinery-Review-Branch: {branch}"
            )
            pushed = push(cfg, location, co, branch)
            if pushed.returncode == 0:
                return _proposal(cfg, location, release, commit, co.base, changed, merged=False)
            now = remote_tip(cfg, location, branch)
            if attempt < PUSH_ATTEMPTS and now != tip:
                # Another promotion of the same release pushed the branch meanwhile: look again.
                time.sleep(RETRY_PAUSE_S * attempt)
                continue
            raise _push_refused(cfg, location, pushed, branch, tip, now, co.base)
    raise AssertionError("unreachable: every attempt returns, continues or raises")  # pragma: no cover


def _holds_release(cfg: GitOpsConfig, location: str, co: Checkout, tip: str, release: Release) -> bool:
    """Whether the review branch's head ``tip`` is this change on the current head (a retried promotion)."""
    if parent(cfg, location, co.work, tip) != co.base:
        return False
    shown = git(["show", f"{tip}:{co.path}"], cfg, location, cwd=co.work, check=False)
    return shown.returncode == 0 and release_from_text(shown.stdout, co.where) == release


def _push_refused(
    cfg: GitOpsConfig,
    location: str,
    pushed: subprocess.CompletedProcess[str],
    branch: str,
    tip: str | None,
    now: str | None,
    base: str,
) -> GitOpsError:
    if tip is not None and now == tip:
        return GitOpsError(
            f"GitOps repository {redact(location)}: branch {branch} already exists at {tip[:12]} with"
            f" a change that is neither this promotion on the head of {cfg.branch!r} ({base[:12]}) nor"
            f" merged into it; merge it, or delete it (git push origin --delete {branch}), and"
            " promote again"
        )
    return command_error(location, pushed, "rejected the review branch push")


def _proposal(
    cfg: GitOpsConfig,
    location: str,
    release: Release,
    commit: str,
    base: str,
    changed: tuple[str, ...],
    *,
    merged: bool,
) -> ProposalResult:
    branch = review_branch(cfg.environment, release)
    return ProposalResult(
        branch,
        commit,
        base,
        cfg.environment,
        redact(location),
        changed,
        release,
        merged,
        compare_url(cfg, branch),
        merge_hint(cfg, branch),
    )


def _web_location(location: str) -> tuple[str, str] | None:
    """(host, owner/repository path) of a hosted repository URL, for its web pages; None for a path."""
    if not is_git_remote(location) or location.startswith("file://"):
        return None
    if "://" in location:
        from urllib.parse import urlsplit

        parts = urlsplit(location)
        host = parts.hostname or ""
        if parts.scheme in {"http", "https"} and parts.port:
            host = f"{host}:{parts.port}"
        path = parts.path
    else:
        host_part, _, path = location.partition(":")
        host = host_part.rpartition("@")[2]
    path = path.strip("/").removesuffix(".git").strip("/")
    return (host.lower(), path) if host and path else None

"""The GitOps repository itself: where it is, and creating and seeding a local one on first use.

By default ``gitops.repository`` is the path of a local *bare* repository, created on first use and
seeded from ``gitops.seed_dir`` (one commit holding the tree under ``k8s/``). It is built beside its
path and published in one rename (:func:`refinery.atomic.staged_dir`), so a crash or a concurrent first
use never leaves a half-made repository. A remote (``https://``, ``ssh://``, git's scp-like
``git@host:path``, or ``file://``) must already hold the tree; it is only checked, never seeded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from refinery.atomic import staged_dir
from refinery.config import GitOpsConfig, is_git_remote
from refinery.errors import GitOpsError
from refinery.gitops.git import (
    authenticated,
    command_error,
    git,
    has_branch,
    has_refs,
    is_bare_repository,
    redact,
)


@authenticated
def ensure_repository(cfg: GitOpsConfig) -> str:
    """Make sure the GitOps repository exists and holds ``cfg.branch``; return its location.

    A local path that does not exist yet (or is an empty directory, or an empty bare repository) becomes
    a bare repository whose first commit on ``cfg.branch`` holds ``cfg.seed_dir`` under ``k8s/``. It is
    built next to the target and renamed into place, so a crash or a concurrent first use never leaves
    a half-made repository. A URL is only checked with ``git ls-remote``.

    Args:
        cfg: The GitOps section of a resolved run configuration.

    Returns:
        The repository location: the absolute path of the bare repository, or the URL as given.

    Raises:
        GitOpsError: The location is unset, unreachable, not a bare repository, lacks the branch, or
            the seed folder has no overlays.
    """
    location = _location(cfg)
    if is_git_remote(location):
        _check_remote(cfg, location)
        return location

    path = Path(location)
    if is_bare_repository(path, cfg):
        if not has_refs(path, cfg):
            _seed(cfg, path)
        elif not has_branch(path, cfg):
            raise GitOpsError(f"GitOps repository {path} has no branch {cfg.branch!r}")
        return str(path)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise GitOpsError(
            f"GitOps repository {path} exists but is not a bare git repository; "
            f"point gitops.repository at a bare repository, a new path or a URL"
        )
    _create(cfg, path)
    return str(path)


def _location(cfg: GitOpsConfig) -> str:
    if not cfg.repository:
        raise GitOpsError(
            "gitops.repository is not set; load the configuration with load_config(), "
            "which fills in a local repository under state_dir"
        )
    return cfg.repository


def _check_remote(cfg: GitOpsConfig, location: str) -> None:
    proc = git(["ls-remote", "--exit-code", "--heads", location, cfg.branch], cfg, location, check=False)
    if proc.returncode == 2:
        raise GitOpsError(
            f"GitOps repository {redact(location)} has no branch {cfg.branch!r}; "
            f"push the manifests (k8s/ under k8s/) to it first"
        )
    if proc.returncode != 0:
        raise command_error(location, proc, "is not reachable", unreachable=True)


def _create(cfg: GitOpsConfig, path: Path) -> None:
    try:
        with staged_dir(path, mode="create") as staging:
            git(["init", "--quiet", "--bare", f"--initial-branch={cfg.branch}", str(staging)], cfg, str(path))
            # History is the audit trail of promotions: refuse force pushes.
            git(["--git-dir", str(staging), "config", "receive.denyNonFastForwards", "true"], cfg, str(path))
            _seed(cfg, staging, reported_as=path)
    except OSError as exc:  # FileExistsError, or the rename's ENOTEMPTY when the race is lost later
        # Another process created it first (the rename is atomic); use theirs.
        if is_bare_repository(path, cfg) and has_branch(path, cfg):
            return
        raise GitOpsError(f"cannot create GitOps repository {path}: {exc}") from None


def _seed(cfg: GitOpsConfig, bare: Path, reported_as: Path | None = None) -> None:
    """Push one commit holding ``cfg.seed_dir`` under ``k8s/`` to ``cfg.branch`` of ``bare``."""
    location = str(reported_as or bare)
    seed = Path(cfg.seed_dir)
    if not (seed / "overlays").is_dir():
        raise GitOpsError(
            f"cannot seed GitOps repository {location}: gitops.seed_dir {seed} has no overlays/ folder "
            f"(expected the k8s/ tree with base/ and overlays/)"
        )
    with tempfile.TemporaryDirectory(prefix="refinery-gitops-seed-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(
            seed, work / "k8s", ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".DS_Store")
        )
        git(["init", "--quiet", f"--initial-branch={cfg.branch}", str(work)], cfg, location)
        git(["add", "--all"], cfg, location, cwd=work)
        git(
            [
                "commit",
                "--quiet",
                "-m",
                "seed GitOps repository with the refinery manifests",
                "-m",
                f"Copied from {seed} into k8s/. Promotions edit k8s/overlays/<environment>/kustomization.yaml.",
            ],
            cfg,
            location,
            cwd=work,
        )
        git(["push", "--quiet", str(bare), f"HEAD:refs/heads/{cfg.branch}"], cfg, location, cwd=work)

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
Credentials come from the environment only (:mod:`refinery.credentials`): ``REFINERY_GIT_TOKEN`` is
handed to git by a credential helper that reads the variable (the token is in no URL, argument or
file), and ``REFINERY_GIT_SSH_KEY`` with ``REFINERY_GIT_KNOWN_HOSTS`` are written to a private folder
that lives as long as the operation, for ssh to use with strict host key checking.

Everything goes through the real git CLI in throwaway clones, with author and committer set from the
configuration so that no global git configuration is needed. A push that loses a race with another is
redone on a fresh clone, so each promotion lands as its own commit; with ``expected``, :func:`promote` is
a compare-and-swap instead, which :mod:`refinery.registry.promotion` uses so that of two promotions
judged against the same champion only the first lands.

An environment listed in ``gitops.protected_environments`` changes only through review: :func:`propose`
makes the same commit on a fresh clone but pushes it to the branch ``promote/<environment>/<model>-v<N>``,
never to ``gitops.branch``, and names the page to compare it on (:func:`compare_url`) or the git
commands that merge it (:func:`merge_hint`). :func:`read_state` reads every overlay of the branch and
every review branch (merged or not) in one clone, for ``refinery models sync`` and ``refinery status``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import yaml

from refinery.config import GitOpsConfig, is_git_remote
from refinery.credentials import GIT_KNOWN_HOSTS, GIT_SSH_KEY, GIT_TOKEN, GIT_USERNAME
from refinery.errors import GitOpsError, PromotionConflict
from refinery.results import to_jsonable, write_json
from refinery.serving import ENV_BENTO_SHA256, ENV_BENTO_TAG, ENV_BENTO_URI, ENV_MODEL_NAME, ENV_MODEL_VERSION

#: Image name used in k8s/base; each overlay's ``images`` entry with this name is what promote edits.
IMAGE_NAME = "refinery-serving"
#: Name of the ConfigMap generator (in each overlay) that carries the release literals.
RELEASE_CONFIGMAP = "refinery-release"
#: Value of REFINERY_MODEL_VERSION in an overlay that has never been promoted.
UNRELEASED = "none"
#: Where the overlays live inside the GitOps repository.
OVERLAYS_DIR = "k8s/overlays"
#: Prefix of the branches a promotion to a protected environment pushes for review.
REVIEW_PREFIX = "promote/"

# The release literals, by Release field: the serving container reads them as environment variables.
_LITERALS = {
    "model_name": ENV_MODEL_NAME,
    "model_version": ENV_MODEL_VERSION,
    "bento_tag": ENV_BENTO_TAG,
    "bento_uri": ENV_BENTO_URI,
    "bento_sha256": ENV_BENTO_SHA256,
}

# Attempts on a fresh clone when another promotion moved (or was moving) the branch between our clone
# and our push: one retry covers two concurrent promotions, a second covers a push that only hit the
# other one's ref lock while it was still updating.
_PUSH_ATTEMPTS = 3
_RETRY_PAUSE_S = 0.2
# What git says when a push lost a race with another push (with LC_ALL=C).
_LOST_RACE_RE = re.compile(
    r"non-fast-forward|fetch first|cannot lock ref|failed to update ref|unable to create .*\.lock",
    re.IGNORECASE,
)
_GIT_TIMEOUT_S = 300

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# An OCI image tag: https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Environment variables that would make git operate on some other repository than the one we name.
_REPO_LOCATING_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
_CREDENTIALS_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# A git credential helper that answers with the token from the environment: the token itself never
# appears in git's configuration, its arguments or a URL.
_TOKEN_HELPER = (
    f'!f() {{ test "$1" = get || exit 0; echo "username=${{{GIT_USERNAME}:-git}}"; '
    f'echo "password=${GIT_TOKEN}"; }}; f'
)
# Extra environment for git while an operation runs (set by _credentials).
P = ParamSpec("P")
R = TypeVar("R")
_CREDENTIAL_ENV: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "credential_env", default=None
)


@dataclass(frozen=True)
class Release:
    """What an overlay serves: a registered model version, the Bento built from it and the image that
    serves it.

    Attributes:
        model_name: Registered model name, e.g. ``review-sentiment``.
        model_version: Registry version, e.g. ``3``.
        bento_tag: ``NAME:VERSION`` of the Bento.
        bento_uri: Where the Bento is stored; the serving container fetches it from there.
        bento_sha256: The stored Bento's SHA-256, checked by the serving container.
        image: The serving image: ``registry/repository@sha256:...`` (or ``localhost/name:tag`` for
            podman's local storage, which has no digests a cluster could pull by).
    """

    model_name: str
    model_version: str
    bento_tag: str
    bento_uri: str
    bento_sha256: str
    image: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


@dataclass(frozen=True)
class PromotionResult:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)

    def write_json(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically) and return the path."""
        return write_json(self, path)


@dataclass(frozen=True)
class ProposalResult:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


@dataclass(frozen=True)
class Overlay:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


@dataclass(frozen=True)
class ReviewBranch:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


@dataclass(frozen=True)
class GitOpsState:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


# ---------------------------------------------------------------------------------------- credentials


@contextlib.contextmanager
def _credentials() -> Iterator[None]:
    """For the block, git authenticates with the credentials in the environment, if any (see the module).

    Re-entrant: an operation inside another keeps the outer one's files.

    Raises:
        GitOpsError: An ssh key is given without the host keys to trust.
    """
    if _CREDENTIAL_ENV.get() is not None:
        yield
        return
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if os.environ.get(GIT_TOKEN):
            # An empty helper first empties the list: no helper of the user's or the system's configuration
            # (credential.helper=store, a keychain) is asked to keep the token.
            env.update(
                GIT_CONFIG_COUNT="2",
                GIT_CONFIG_KEY_0="credential.helper",
                GIT_CONFIG_VALUE_0="",
                GIT_CONFIG_KEY_1="credential.helper",
                GIT_CONFIG_VALUE_1=_TOKEN_HELPER,
            )
        key = os.environ.get(GIT_SSH_KEY, "")
        if key.strip():
            known_hosts = os.environ.get(GIT_KNOWN_HOSTS, "")
            if not known_hosts.strip():
                raise GitOpsError(
                    f"{GIT_SSH_KEY} is set but {GIT_KNOWN_HOSTS} is empty: refinery trusts only the host keys"
                    " it is given (ssh-keyscan HOST, checked by hand, is one way to get them)"
                )
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="refinery-ssh-")))
            key_file, hosts_file = folder / "key", folder / "known_hosts"
            for path, text in ((key_file, key), (hosts_file, known_hosts)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text.strip() + "\n")
            env["GIT_SSH_COMMAND"] = shlex.join(
                [
                    "ssh",
                    "-F",
                    "/dev/null",
                    "-i",
                    str(key_file),
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    f"UserKnownHostsFile={hosts_file}",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                ]
            )
        token = _CREDENTIAL_ENV.set(env)
        try:
            yield
        finally:
            _CREDENTIAL_ENV.reset(token)


def _authenticated(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` inside :func:`_credentials`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _credentials():
            return fn(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------------------------- public


@_authenticated
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
        proc = _git(["ls-remote", "--exit-code", "--heads", location, cfg.branch], cfg, location, check=False)
        if proc.returncode == 2:
            raise GitOpsError(
                f"GitOps repository {_redact(location)} has no branch {cfg.branch!r}; "
                f"push the manifests (k8s/ under k8s/) to it first"
            )
        if proc.returncode != 0:
            raise _command_error(location, proc, "is not reachable")
        return location

    path = Path(location)
    if _is_bare_repository(path, cfg):
        if not _has_refs(path, cfg):
            _seed(cfg, path)
        elif not _has_branch(path, cfg):
            raise GitOpsError(f"GitOps repository {path} has no branch {cfg.branch!r}")
        return str(path)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise GitOpsError(
            f"GitOps repository {path} exists but is not a bare git repository; "
            f"point gitops.repository at a bare repository, a new path or a URL"
        )
    _create(cfg, path)
    return str(path)


@_authenticated
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
    _check_release(release)
    location = ensure_repository(cfg)
    overlay = _overlay_path(cfg.environment)
    for attempt in range(1, _PUSH_ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="refinery-gitops-") as tmp:
            work = Path(tmp) / "work"
            _clone(cfg, location, work)
            base = _head(work, cfg, location)
            overlay_file = work / overlay
            if not overlay_file.is_file():
                raise _unknown_environment(cfg, location, _environments_in_tree(work))
            where = f"{_redact(location)}:{overlay}"
            text = overlay_file.read_text(encoding="utf-8")
            previous = _release_from_text(text, where)
            if previous == release:
                return PromotionResult(base, cfg.environment, _redact(location), (), release)
            named = previous.model_version if previous else None
            if expected is not None and named not in expected:
                wanted = " or ".join("nothing released" if v is None else f"version {v}" for v in expected)
                raise PromotionConflict(
                    f"cannot {action} {release.model_name} v{release.model_version}: {where} names "
                    f"{'nothing released' if named is None else f'version {named}'} at {base[:12]}, "
                    f"expected {wanted}; another promotion got there first"
                )
            overlay_file.write_text(_apply_release(text, release, where), encoding="utf-8")
            _git(["add", "--", overlay], cfg, location, cwd=work)
            changed = tuple(_git(["diff", "--cached", "--name-only"], cfg, location, cwd=work).stdout.split())
            subject, body = _commit_message(cfg.environment, release, previous, overlay, action, reason)
            _git(["commit", "--quiet", "-m", subject, "-m", body], cfg, location, cwd=work)
            commit = _head(work, cfg, location)
            push = _git(
                ["push", "--quiet", "origin", f"HEAD:refs/heads/{cfg.branch}"],
                cfg,
                location,
                cwd=work,
                check=False,
            )
            if push.returncode == 0:
                return PromotionResult(commit, cfg.environment, _redact(location), changed, release)
            if attempt < _PUSH_ATTEMPTS and (
                _LOST_RACE_RE.search(push.stderr) or _branch_moved(cfg, location, base)
            ):
                time.sleep(_RETRY_PAUSE_S * attempt)
                continue
            raise _command_error(location, push, "rejected the promotion push")
    raise AssertionError("unreachable: every attempt returns, continues or raises")  # pragma: no cover


@_authenticated
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
        _clone(cfg, location, work)
        head = _head(work, cfg, location)
        if head != commit:
            raise GitOpsError(
                f"GitOps repository {_redact(location)}: cannot revert {commit[:12]}, the head of "
                f"{cfg.branch!r} is now {head[:12]}"
            )
        subject = _git(["log", "-1", "--format=%s", commit], cfg, location, cwd=work).stdout.strip()
        _git(["revert", "--no-edit", "--no-commit", commit], cfg, location, cwd=work)
        body = f"Reverts {commit}: {_one_line(reason)}\n\nRefinery-Action: revert\nRefinery-Reverts: {commit}"
        _git(["commit", "--quiet", "-m", f'revert "{subject}"', "-m", body], cfg, location, cwd=work)
        new = _head(work, cfg, location)
        _git(["push", "--quiet", "origin", f"HEAD:refs/heads/{cfg.branch}"], cfg, location, cwd=work)
    return new


@_authenticated
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
    overlay = _overlay_path(cfg.environment)
    where = f"{_redact(location)}:{overlay}"
    if is_git_remote(location):
        with tempfile.TemporaryDirectory(prefix="refinery-gitops-") as tmp:
            work = Path(tmp) / "work"
            _clone(cfg, location, work)
            overlay_file = work / overlay
            if not overlay_file.is_file():
                raise _unknown_environment(cfg, location, _environments_in_tree(work))
            return _release_from_text(overlay_file.read_text(encoding="utf-8"), where)
    ref = f"refs/heads/{cfg.branch}"
    proc = _git(["--git-dir", location, "show", f"{ref}:{overlay}"], cfg, location, check=False)
    if proc.returncode != 0:
        available = _environments_at_ref(cfg, location, ref)
        if cfg.environment not in available:
            raise _unknown_environment(cfg, location, available)
        raise _command_error(location, proc, f"cannot read {overlay}")
    return _release_from_text(proc.stdout, where)


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
    location = _redact(cfg.repository or "")
    return (
        f"git clone {shlex.quote(location)} gitops-review && cd gitops-review && "
        f"git merge --no-ff origin/{branch} && git push origin {cfg.branch}"
    )


@_authenticated
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

    The commit is the one :func:`promote` would make, on a fresh clone. Nothing is pushed when the main
    branch already names the release (``merged``), or when the review branch already holds this change
    on the current head (a retried promotion). A review branch left from an earlier promotion that was
    merged since is moved forward (its head is in the main branch); one holding another, unmerged change
    is refused, naming it.

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
    _check_release(release)
    location = ensure_repository(cfg)
    overlay = _overlay_path(cfg.environment)
    branch = review_branch(cfg.environment, release)
    for attempt in range(1, _PUSH_ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="refinery-gitops-") as tmp:
            work = Path(tmp) / "work"
            # With history: a review branch merged earlier must be seen to be an ancestor of the new commit.
            _clone(cfg, location, work, history=True)
            base = _head(work, cfg, location)
            overlay_file = work / overlay
            if not overlay_file.is_file():
                raise _unknown_environment(cfg, location, _environments_in_tree(work))
            where = f"{_redact(location)}:{overlay}"
            text = overlay_file.read_text(encoding="utf-8")
            previous = _release_from_text(text, where)
            if previous == release:
                return _proposal(cfg, location, release, base, base, (), merged=True)
            named = previous.model_version if previous else None
            if expected is not None and named not in expected:
                wanted = " or ".join("nothing released" if v is None else f"version {v}" for v in expected)
                raise PromotionConflict(
                    f"cannot {action} {release.model_name} v{release.model_version}: {where} names "
                    f"{'nothing released' if named is None else f'version {named}'} at {base[:12]}, "
                    f"expected {wanted}; another promotion got there first (or was merged and "
                    "`refinery models sync` has not run yet)"
                )
            tip = _fetch_branch(cfg, location, work, branch)
            if tip is not None and _parent(cfg, location, work, tip) == base:
                shown = _git(["show", f"{tip}:{overlay}"], cfg, location, cwd=work, check=False)
                if shown.returncode == 0 and _release_from_text(shown.stdout, where) == release:
                    return _proposal(cfg, location, release, tip, base, (), merged=False)
            overlay_file.write_text(_apply_release(text, release, where), encoding="utf-8")
            _git(["add", "--", overlay], cfg, location, cwd=work)
            changed = tuple(_git(["diff", "--cached", "--name-only"], cfg, location, cwd=work).stdout.split())
            subject, body = _commit_message(cfg.environment, release, previous, overlay, action, reason)
            body += f"\nRefinery-Review-Branch: {branch}"
            _git(["commit", "--quiet", "-m", subject, "-m", body], cfg, location, cwd=work)
            commit = _head(work, cfg, location)
            push = _git(
                ["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"],
                cfg,
                location,
                cwd=work,
                check=False,
            )
            if push.returncode == 0:
                return _proposal(cfg, location, release, commit, base, changed, merged=False)
            now = _remote_tip(cfg, location, branch)
            if attempt < _PUSH_ATTEMPTS and now != tip:
                # Another promotion of the same release pushed the branch meanwhile: look again.
                time.sleep(_RETRY_PAUSE_S * attempt)
                continue
            if tip is not None and now == tip:
                raise GitOpsError(
                    f"GitOps repository {_redact(location)}: branch {branch} already exists at {tip[:12]} with"
                    f" a change that is neither this promotion on the head of {cfg.branch!r} ({base[:12]}) nor"
                    f" merged into it; merge it, or delete it (git push origin --delete {branch}), and"
                    " promote again"
                )
            raise _command_error(location, push, "rejected the review branch push")
    raise AssertionError("unreachable: every attempt returns, continues or raises")  # pragma: no cover


@_authenticated
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
        _clone(cfg, location, work, history=True)
        head = _head(work, cfg, location)
        overlays = []
        for environment in _environments_in_tree(work):
            path = _overlay_path(environment)
            text = (work / path).read_text(encoding="utf-8")
            changed = _git(["log", "-1", "--format=%H", "HEAD", "--", path], cfg, location, cwd=work)
            release, error = None, ""
            try:
                release = _release_from_text(text, f"{_redact(location)}:{path}")
            except GitOpsError as exc:
                error = str(exc)
            data: dict[str, Any] = {}
            with contextlib.suppress(yaml.YAMLError):
                loaded = yaml.safe_load(text)
                data = loaded if isinstance(loaded, dict) else {}
            overlays.append(
                Overlay(
                    environment,
                    release,
                    changed.stdout.strip() or head,
                    str(data.get("namespace") or ""),
                    str(data.get("namePrefix") or ""),
                    str(data.get("nameSuffix") or ""),
                    error,
                )
            )
        main_releases = {o.environment: o.release for o in overlays}
        _git(
            [
                "fetch",
                "--quiet",
                "origin",
                f"+refs/heads/{REVIEW_PREFIX}*:refs/remotes/origin/{REVIEW_PREFIX}*",
            ],
            cfg,
            location,
            cwd=work,
        )
        listed = _git(
            [
                "for-each-ref",
                "--format=%(refname:strip=3) %(objectname)",
                f"refs/remotes/origin/{REVIEW_PREFIX}",
            ],
            cfg,
            location,
            cwd=work,
        )
        branches = []
        for line in listed.stdout.splitlines():
            name, _, tip = line.partition(" ")
            environment = name.removeprefix(REVIEW_PREFIX).partition("/")[0]
            path = _overlay_path(environment)
            shown = _git(["show", f"{tip}:{path}"], cfg, location, cwd=work, check=False)
            proposed = None
            if shown.returncode == 0:
                with contextlib.suppress(GitOpsError):
                    proposed = _release_from_text(shown.stdout, f"{name}:{path}")
            ancestor = _git(
                ["merge-base", "--is-ancestor", tip, "HEAD"], cfg, location, cwd=work, check=False
            )
            merged = ancestor.returncode == 0 or (
                proposed is not None and main_releases.get(environment) == proposed
            )
            branches.append(ReviewBranch(name, environment, tip, proposed, merged))
    return GitOpsState(_redact(location), cfg.branch, head, tuple(overlays), tuple(branches))


# ------------------------------------------------------------------------------------------------ git


def _git_env(cfg: GitOpsConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_LOCATING_ENV}
    env.update(
        GIT_AUTHOR_NAME=cfg.author_name,
        GIT_AUTHOR_EMAIL=cfg.author_email,
        GIT_COMMITTER_NAME=cfg.author_name,
        GIT_COMMITTER_EMAIL=cfg.author_email,
        # Never wait for a password on a terminal: fail with git's message instead.
        GIT_TERMINAL_PROMPT="0",
        # English messages, so errors read the same in every locale.
        LC_ALL="C",
    )
    env.update(_CREDENTIAL_ENV.get() or {})
    return env


def _git(
    args: list[str],
    cfg: GitOpsConfig,
    location: str,
    *,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    cmd = ["git", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=_git_env(cfg),
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise GitOpsError(
            f"GitOps repository {_redact(location)}: the git command is not installed"
        ) from None
    except subprocess.TimeoutExpired:
        raise GitOpsError(
            f"GitOps repository {_redact(location)}: `{_redact(shlex.join(cmd))}` "
            f"did not finish within {_GIT_TIMEOUT_S} s"
        ) from None
    if check and proc.returncode != 0:
        raise _command_error(location, proc, "git command failed")
    return proc


def _command_error(location: str, proc: subprocess.CompletedProcess[str], what: str) -> GitOpsError:
    output = (proc.stderr or proc.stdout or "").strip() or "(no output)"
    return GitOpsError(
        f"GitOps repository {_redact(location)} {what}: `{_redact(shlex.join(proc.args))}` "
        f"exited with {proc.returncode}: {_redact(output)}"
    )


def _redact(text: str) -> str:
    """Mask ``user:token@`` in URLs so that credentials never reach messages or results."""
    return _CREDENTIALS_RE.sub(r"\g<scheme>***@", text)


def _location(cfg: GitOpsConfig) -> str:
    if not cfg.repository:
        raise GitOpsError(
            "gitops.repository is not set; load the configuration with load_config(), "
            "which fills in a local repository under state_dir"
        )
    return cfg.repository


def _is_bare_repository(path: Path, cfg: GitOpsConfig) -> bool:
    if not path.is_dir():
        return False
    proc = _git(["--git-dir", str(path), "rev-parse", "--is-bare-repository"], cfg, str(path), check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def _has_refs(path: Path, cfg: GitOpsConfig) -> bool:
    proc = _git(["--git-dir", str(path), "for-each-ref", "--count=1"], cfg, str(path))
    return bool(proc.stdout.strip())


def _has_branch(path: Path, cfg: GitOpsConfig) -> bool:
    proc = _git(
        ["--git-dir", str(path), "rev-parse", "--verify", "--quiet", f"refs/heads/{cfg.branch}"],
        cfg,
        str(path),
        check=False,
    )
    return proc.returncode == 0


def _clone(cfg: GitOpsConfig, location: str, work: Path, *, history: bool = False) -> None:
    args = ["clone", "--quiet", "--single-branch", "--branch", cfg.branch]
    if is_git_remote(location) and not history:
        # Only the head is needed; a local path is cloned with hard links, where depth does not apply.
        args += ["--depth", "1"]
    _git([*args, location, str(work)], cfg, location)


def _head(work: Path, cfg: GitOpsConfig, location: str) -> str:
    return _git(["rev-parse", "HEAD"], cfg, location, cwd=work).stdout.strip()


def _branch_moved(cfg: GitOpsConfig, location: str, base: str) -> bool:
    proc = _git(["ls-remote", "--heads", location, cfg.branch], cfg, location, check=False)
    if proc.returncode != 0:
        return False
    heads = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return bool(heads) and heads[0] != base


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
        _redact(location),
        changed,
        release,
        merged,
        compare_url(cfg, branch),
        merge_hint(cfg, branch),
    )


def _fetch_branch(cfg: GitOpsConfig, location: str, work: Path, branch: str) -> str | None:
    """Fetch ``branch`` of the remote into the clone; its head, or None when the remote has no such branch."""
    if _remote_tip(cfg, location, branch) is None:
        return None
    _git(
        ["fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"],
        cfg,
        location,
        cwd=work,
    )
    return _git(["rev-parse", f"refs/remotes/origin/{branch}"], cfg, location, cwd=work).stdout.strip()


def _remote_tip(cfg: GitOpsConfig, location: str, branch: str) -> str | None:
    proc = _git(["ls-remote", "--heads", location, f"refs/heads/{branch}"], cfg, location)
    heads = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return heads[0] if heads else None


def _parent(cfg: GitOpsConfig, location: str, work: Path, commit: str) -> str | None:
    """The first parent of ``commit``, read from the commit object itself."""
    raw = _git(["cat-file", "commit", commit], cfg, location, cwd=work).stdout
    for line in raw.splitlines():
        if not line:
            break
        if line.startswith("parent "):
            return line.split()[1]
    return None


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


# ------------------------------------------------------------------------------------------- seeding


def _create(cfg: GitOpsConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _git(["init", "--quiet", "--bare", f"--initial-branch={cfg.branch}", str(staging)], cfg, str(path))
        # History is the audit trail of promotions: refuse force pushes.
        _git(["--git-dir", str(staging), "config", "receive.denyNonFastForwards", "true"], cfg, str(path))
        _seed(cfg, staging, reported_as=path)
        try:
            os.rename(staging, path)
        except OSError as exc:
            # Another process created it first (the rename is atomic); use theirs.
            if _is_bare_repository(path, cfg) and _has_branch(path, cfg):
                return
            raise GitOpsError(f"cannot create GitOps repository {path}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
        _git(["init", "--quiet", f"--initial-branch={cfg.branch}", str(work)], cfg, location)
        _git(["add", "--all"], cfg, location, cwd=work)
        _git(
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
        _git(["push", "--quiet", str(bare), f"HEAD:refs/heads/{cfg.branch}"], cfg, location, cwd=work)


# ------------------------------------------------------------------------------------------ overlays


def _overlay_path(environment: str) -> str:
    return f"{OVERLAYS_DIR}/{environment}/kustomization.yaml"


def _environments_in_tree(work: Path) -> list[str]:
    root = work / OVERLAYS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "kustomization.yaml").is_file())


def _environments_at_ref(cfg: GitOpsConfig, location: str, ref: str) -> list[str]:
    proc = _git(
        ["--git-dir", location, "ls-tree", "-r", "--name-only", ref, "--", f"{OVERLAYS_DIR}/"],
        cfg,
        location,
        check=False,
    )
    pattern = re.compile(rf"^{re.escape(OVERLAYS_DIR)}/([^/]+)/kustomization\.yaml$")
    return sorted({m.group(1) for line in proc.stdout.splitlines() if (m := pattern.match(line))})


def _unknown_environment(cfg: GitOpsConfig, location: str, available: list[str]) -> GitOpsError:
    return GitOpsError(
        f"GitOps repository {_redact(location)} has no environment {cfg.environment!r} "
        f"(no {_overlay_path(cfg.environment)} on branch {cfg.branch!r}); "
        f"available environments: {', '.join(available) or '(none)'}"
    )


class _KustomizationDumper(yaml.SafeDumper):
    """Safe dumper that keeps multi-line strings (inline ``patch: |`` blocks) as block literals."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_KustomizationDumper.add_representer(str, _represent_str)


def _split_header(text: str) -> tuple[str, str]:
    """Split the leading comment block (kept verbatim) from the YAML body (rewritten)."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (lines[i].lstrip().startswith("#") or not lines[i].strip()):
        i += 1
    return "".join(lines[:i]), "".join(lines[i:])


def _load_kustomization(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GitOpsError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise GitOpsError(f"{where}: expected a kustomization mapping")
    return data


def _release_literals(data: dict[str, Any], where: str) -> list[Any]:
    for entry in data.get("configMapGenerator") or []:
        if isinstance(entry, dict) and entry.get("name") == RELEASE_CONFIGMAP:
            literals = entry.setdefault("literals", [])
            if not isinstance(literals, list):
                raise GitOpsError(
                    f"{where}: configMapGenerator {RELEASE_CONFIGMAP!r} literals must be a list"
                )
            return literals
    raise GitOpsError(
        f"{where}: no configMapGenerator named {RELEASE_CONFIGMAP!r}, whose literals promote rewrites"
    )


def _image_entry(data: dict[str, Any]) -> dict[str, Any] | None:
    for entry in data.get("images") or []:
        if isinstance(entry, dict) and entry.get("name") == IMAGE_NAME:
            return entry
    return None


def _image_of(entry: dict[str, Any] | None) -> str:
    """The image an ``images`` entry names, as ``name@digest`` or ``name:tag`` ("" for none)."""
    if entry is None or not entry.get("newName"):
        return ""
    if entry.get("digest"):
        return f"{entry['newName']}@{entry['digest']}"
    return f"{entry['newName']}:{entry.get('newTag', '')}"


def _release_from_text(text: str, where: str) -> Release | None:
    data = _load_kustomization(text, where)
    literals = _release_literals(data, where)
    values = dict(str(item).partition("=")[::2] for item in literals)
    if values.get(ENV_MODEL_VERSION) == UNRELEASED:
        return None
    missing = [key for key in _LITERALS.values() if key not in values]
    if missing:
        raise GitOpsError(
            f"{where}: configMapGenerator {RELEASE_CONFIGMAP!r} lacks the literal(s) {', '.join(missing)}"
        )
    fields = {field: values[key] for field, key in _LITERALS.items()}
    return Release(**fields, image=_image_of(_image_entry(data)))


def _apply_release(text: str, release: Release, where: str) -> str:
    header, body = _split_header(text)
    data = _load_kustomization(body, where)
    image = _image_entry(data)
    if image is None:
        image = {"name": IMAGE_NAME}
        data["images"] = [*(data.get("images") or []), image]
    name, at, digest = release.image.partition("@")
    if at:
        # By digest: the cluster runs exactly the image the registry held when this was committed.
        image["newName"], image["digest"] = name, digest
        image.pop("newTag", None)
    else:
        image["newName"], _, image["newTag"] = name.rpartition(":")
        image.pop("digest", None)
    literals = _release_literals(data, where)
    wanted = {key: getattr(release, field) for field, key in _LITERALS.items()}
    for i, item in enumerate(literals):
        key = str(item).partition("=")[0]
        if key in wanted:
            literals[i] = f"{key}={wanted.pop(key)}"
    literals.extend(f"{key}={value}" for key, value in wanted.items())
    return header + yaml.dump(
        data,
        Dumper=_KustomizationDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


def _check_release(release: Release) -> None:
    problems = []
    if not _NAME_RE.match(release.model_name):
        problems.append(f"model_name {release.model_name!r} must match {_NAME_RE.pattern}")
    if not _NAME_RE.match(release.model_version) or release.model_version == UNRELEASED:
        problems.append(
            f"model_version {release.model_version!r} must match {_NAME_RE.pattern} "
            f"and not be {UNRELEASED!r} (which marks an overlay that was never promoted)"
        )
    name, sep, version = release.bento_tag.partition(":")
    if not sep or not _NAME_RE.match(name) or not _IMAGE_TAG_RE.match(version) or version == "latest":
        problems.append(f"bento_tag {release.bento_tag!r} must be NAME:VERSION with a concrete VERSION")
    if not release.bento_uri or any(c.isspace() for c in release.bento_uri):
        problems.append(f"bento_uri {release.bento_uri!r} must be a URI without spaces")
    if not _SHA256_RE.match(release.bento_sha256):
        problems.append(f"bento_sha256 {release.bento_sha256!r} must be 64 hexadecimal digits")
    image, at, digest = release.image.partition("@")
    tag = image.rpartition(":")[2] if "/" in image and ":" in image.rpartition("/")[2] else ""
    if at and not _DIGEST_RE.match(digest):
        problems.append(f"image {release.image!r} has a malformed digest")
    elif not at and (not tag or tag == "latest"):
        problems.append(
            f"image {release.image!r} must be pinned by digest, or (local storage) by a concrete tag"
        )
    if problems:
        raise GitOpsError("cannot promote release: " + "; ".join(problems))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _commit_message(
    environment: str, release: Release, previous: Release | None, overlay: str, action: str, reason: str
) -> tuple[str, str]:
    before = (
        f"{previous.model_name} v{previous.model_version} (bento {previous.bento_tag})"
        if previous
        else "nothing released"
    )
    where = "to" if action == "promote" else "in"
    subject = (
        f"{action} {release.model_name} v{release.model_version} {where} {environment} "
        f"(bento {release.bento_tag})"
    )
    body = (
        f"Sets {overlay} to image {release.image} and the {RELEASE_CONFIGMAP} ConfigMap to "
        f"{release.model_name} v{release.model_version}; replaces {before}.\n"
        f"\n"
        f"Refinery-Environment: {environment}\n"
        f"Refinery-Model-Name: {release.model_name}\n"
        f"Refinery-Model-Version: {release.model_version}\n"
        f"Refinery-Bento-Tag: {release.bento_tag}\n"
        f"Refinery-Bento-Uri: {release.bento_uri}\n"
        f"Refinery-Image: {release.image}\n"
        f"Refinery-Previous-Release: {before}\n"
        f"Refinery-Action: {action}"
    )
    if reason:
        body += f"\nRefinery-Reason: {_one_line(reason)}"
    return subject, body

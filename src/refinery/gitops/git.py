"""The git command runner of GitOps promotion: credentials, a clean environment, errors that say where.

Every git command goes through :func:`git`: the real git CLI with author and committer set from the
configuration (no global git configuration needed), English messages, no terminal prompt, and none of
the environment variables that would point git at another repository than the one named. A failure is
a :class:`~refinery.errors.GitOpsError` naming the repository and git's output, with ``user:token@`` in
any URL masked (:func:`redact`).

Credentials come from the environment only (:mod:`refinery.credentials`), for the time an operation
runs (:func:`authenticated`): ``REFINERY_GIT_TOKEN`` is handed to git by a credential helper that reads
the variable (the token is in no URL, argument or file), and ``REFINERY_GIT_SSH_KEY`` with
``REFINERY_GIT_KNOWN_HOSTS`` are written to a private folder that lives as long as the operation, for
ssh to use with strict host key checking.

The small read-only questions the operations ask of a repository (its head, a remote branch's tip, a
commit's parent, whether a path is a bare repository) live here too, next to the runner they use.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from refinery.config import GitOpsConfig, is_git_remote
from refinery.credentials import GIT_KNOWN_HOSTS, GIT_SSH_KEY, GIT_TOKEN, GIT_USERNAME
from refinery.errors import GitOpsError

_GIT_TIMEOUT_S = 300
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
# Extra environment for git while an operation runs (set by credentials()).
P = ParamSpec("P")
R = TypeVar("R")
_CREDENTIAL_ENV: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "credential_env", default=None
)


# ---------------------------------------------------------------------------------------- credentials


@contextlib.contextmanager
def credentials() -> Iterator[None]:
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
            env["GIT_SSH_COMMAND"] = _ssh_command(stack, key, os.environ.get(GIT_KNOWN_HOSTS, ""))
        token = _CREDENTIAL_ENV.set(env)
        try:
            yield
        finally:
            _CREDENTIAL_ENV.reset(token)


def _ssh_command(stack: contextlib.ExitStack, key: str, known_hosts: str) -> str:
    """Write the key and the host keys to a private folder that ``stack`` removes; the ssh command using them."""
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
    return shlex.join(
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


def authenticated(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` inside :func:`credentials`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with credentials():
            return fn(*args, **kwargs)

    return wrapper


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


def git(
    args: list[str],
    cfg: GitOpsConfig,
    location: str,
    *,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` for the repository at ``location`` (named in errors).

    Raises:
        GitOpsError: git is not installed, did not finish in time, or (with ``check``) exited non-zero.
    """
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
        raise GitOpsError(f"GitOps repository {redact(location)}: the git command is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitOpsError(
            f"GitOps repository {redact(location)}: `{redact(shlex.join(cmd))}` "
            f"did not finish within {_GIT_TIMEOUT_S} s"
        ) from None
    if check and proc.returncode != 0:
        raise command_error(location, proc, "git command failed")
    return proc


def command_error(
    location: str, proc: subprocess.CompletedProcess[str], what: str, *, unreachable: bool = False
) -> GitOpsError:
    """The error for a git command that failed: the repository, the command and git's output
    (``unreachable``: the remote could not be reached, exit status 3)."""
    output = (proc.stderr or proc.stdout or "").strip() or "(no output)"
    return GitOpsError(
        f"GitOps repository {redact(location)} {what}: `{redact(shlex.join(proc.args))}` "
        f"exited with {proc.returncode}: {redact(output)}",
        unreachable=unreachable,
    )


def redact(text: str) -> str:
    """Mask ``user:token@`` in URLs so that credentials never reach messages or results."""
    return _CREDENTIALS_RE.sub(r"\g<scheme>***@", text)


# -------------------------------------------------------------------------------- repository questions


def is_bare_repository(path: Path, cfg: GitOpsConfig) -> bool:
    """Whether ``path`` is a bare git repository."""
    if not path.is_dir():
        return False
    proc = git(["--git-dir", str(path), "rev-parse", "--is-bare-repository"], cfg, str(path), check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def has_refs(path: Path, cfg: GitOpsConfig) -> bool:
    """Whether the bare repository at ``path`` holds any ref."""
    proc = git(["--git-dir", str(path), "for-each-ref", "--count=1"], cfg, str(path))
    return bool(proc.stdout.strip())


def has_branch(path: Path, cfg: GitOpsConfig) -> bool:
    """Whether the bare repository at ``path`` holds ``cfg.branch``."""
    proc = git(
        ["--git-dir", str(path), "rev-parse", "--verify", "--quiet", f"refs/heads/{cfg.branch}"],
        cfg,
        str(path),
        check=False,
    )
    return proc.returncode == 0


def clone(cfg: GitOpsConfig, location: str, work: Path, *, history: bool = False) -> None:
    """Clone ``cfg.branch`` of ``location`` into ``work`` (only its head from a remote, unless ``history``)."""
    args = ["clone", "--quiet", "--single-branch", "--branch", cfg.branch]
    if is_git_remote(location) and not history:
        # Only the head is needed; a local path is cloned with hard links, where depth does not apply.
        args += ["--depth", "1"]
    git([*args, location, str(work)], cfg, location)


def head(work: Path, cfg: GitOpsConfig, location: str) -> str:
    """The commit checked out in the clone ``work``."""
    return git(["rev-parse", "HEAD"], cfg, location, cwd=work).stdout.strip()


def branch_moved(cfg: GitOpsConfig, location: str, base: str) -> bool:
    """Whether ``cfg.branch`` of ``location`` is now elsewhere than ``base`` (False when it cannot be told)."""
    proc = git(["ls-remote", "--heads", location, cfg.branch], cfg, location, check=False)
    if proc.returncode != 0:
        return False
    heads = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return bool(heads) and heads[0] != base


def fetch_branch(cfg: GitOpsConfig, location: str, work: Path, branch: str) -> str | None:
    """Fetch ``branch`` of the remote into the clone; its head, or None when the remote has no such branch."""
    if remote_tip(cfg, location, branch) is None:
        return None
    git(
        ["fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"],
        cfg,
        location,
        cwd=work,
    )
    return git(["rev-parse", f"refs/remotes/origin/{branch}"], cfg, location, cwd=work).stdout.strip()


def remote_tip(cfg: GitOpsConfig, location: str, branch: str) -> str | None:
    """The head of ``branch`` of ``location``, or None when it has no such branch."""
    proc = git(["ls-remote", "--heads", location, f"refs/heads/{branch}"], cfg, location)
    heads = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return heads[0] if heads else None


def parent(cfg: GitOpsConfig, location: str, work: Path, commit: str) -> str | None:
    """The first parent of ``commit``, read from the commit object itself."""
    raw = git(["cat-file", "commit", commit], cfg, location, cwd=work).stdout
    for line in raw.splitlines():
        if not line:
            break
        if line.startswith("parent "):
            return line.split()[1]
    return None

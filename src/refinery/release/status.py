"""``refinery status``: per environment, what the registry, the GitOps branch and the cluster say is served
(the read side of the release flow in :mod:`refinery.release`).

Three records can disagree, each for a reason a person should see:

- the registry's ``champion-<environment>`` alias and the overlay on the GitOps branch: a merged review
  branch whose alias was not synced yet (``refinery models sync``), or a promotion that stopped halfway;
- the overlay and an unmerged ``promote/<environment>/...`` branch: a promotion waiting for review;
- the overlay and the running Deployment (given a kubeconfig): Argo CD has not synced yet (prod syncs by
  hand), or a rollout is in progress or stuck.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.results import Record

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.gitops.cluster import DeploymentState


@dataclass(frozen=True)
class PendingReview(Record):
    """An unmerged review branch of an environment.

    Attributes:
        branch: The branch, ``promote/<environment>/<model>-v<N>``.
        version: The version its overlay names (None when it names none of this model).
        commit: Its head.
    """

    branch: str
    version: str | None
    commit: str


@dataclass(frozen=True)
class EnvironmentStatus(Record):
    """One environment as the registry, the GitOps branch and (optionally) the cluster report it.

    Attributes:
        environment: The overlay folder name.
        protected: Whether its changes go through review (``gitops.protected_environments``).
        alias_version: The version ``champion-<environment>`` names (None: none).
        alias: The alias read: ``champion-<environment>``, or ``champion`` (an older registry's) for the
            configured environment without its own ("" when there is none).
        overlay_version: The version the overlay on the branch names (None: nothing released).
        overlay_model: The model the overlay names ("" when nothing is released).
        overlay_commit: The last commit that changed the overlay.
        overlay_error: Why the overlay could not be read ("" when it could).
        pending: Unmerged review branches of the environment.
        deployment: The running Deployment, when a kubeconfig was given.
        problems: Every disagreement, in words (empty when all agree).
    """

    environment: str
    protected: bool
    alias_version: str | None
    alias: str
    overlay_version: str | None
    overlay_model: str
    overlay_commit: str
    overlay_error: str
    pending: tuple[PendingReview, ...]
    deployment: DeploymentState | None
    problems: tuple[str, ...]

    @property
    def consistent(self) -> bool:
        """Whether the alias, the overlay (and the Deployment, when read) agree and nothing is pending."""
        return not self.problems

    def to_lines(self) -> list[str]:
        """The environment in a few lines: what each side says, then each disagreement."""
        alias = "none" if self.alias_version is None else f"v{self.alias_version}"
        if self.alias == "champion":
            alias += " (plain 'champion' alias of an older registry)"
        if self.overlay_error:
            overlay = f"unreadable ({self.overlay_error})"
        elif self.overlay_version is None:
            overlay = "nothing released"
        else:
            overlay = f"v{self.overlay_version} (commit {self.overlay_commit[:12]})"
        head = (
            f"{self.environment}{' [protected]' if self.protected else ''}: alias {alias}, overlay {overlay}"
        )
        if self.deployment is not None:
            head += f", running {_running(self.deployment)}"
        lines = [f"{head} - {'in sync' if self.consistent else 'MISMATCH'}"]
        lines += [f"  {problem}" for problem in self.problems]
        return lines


def _running(state: DeploymentState) -> str:
    if not state.found:
        return "nothing"
    if not state.model_version:
        return "unknown"
    version = "nothing released" if state.model_version == "none" else f"v{state.model_version}"
    return f"{version} ({state.rollout()})"


def environment_status(
    cfg: RunConfig, *, kubeconfig: str | Path | None = None, context: str | None = None
) -> list[EnvironmentStatus]:
    """Every environment of the GitOps repository (every overlay on ``gitops.branch``), by name.

    Args:
        cfg: The run configuration (registry, GitOps repository, protected environments).
        kubeconfig: Read the running Deployment of each environment with this kubeconfig (None: not read).
        context: The kubeconfig's context (default: its current one).

    Raises:
        GitOpsError: The GitOps repository cannot be read.
        RegistryError: The registry is unreachable.
        ClusterError: The kubeconfig cannot be used, or its API server cannot be reached.
    """
    import contextlib

    from refinery.gitops.cluster import api_client, read_deployment
    from refinery.gitops.repo import read_state
    from refinery.registry.mlflow_registry import LEGACY_CHAMPION, Registry, champion_alias

    registry = Registry(cfg.registry)
    state = read_state(cfg.gitops)
    aliases = registry.aliases()
    statuses = []
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(api_client(kubeconfig, context)) if kubeconfig is not None else None
        for overlay in state.overlays:
            env = overlay.environment
            alias = champion_alias(env)
            if alias not in aliases and env == cfg.gitops.environment and LEGACY_CHAMPION in aliases:
                alias = LEGACY_CHAMPION
            alias_version = aliases.get(alias)
            release = overlay.release
            pending = tuple(
                PendingReview(
                    branch.name,
                    branch.release.model_version
                    if branch.release and branch.release.model_name == registry.name
                    else None,
                    branch.commit,
                )
                for branch in state.pending(env)
            )
            deployment = None
            if api is not None:
                deployment = read_deployment(
                    api,
                    overlay.namespace or "default",
                    name_prefix=overlay.name_prefix,
                    name_suffix=overlay.name_suffix,
                )
            statuses.append(
                EnvironmentStatus(
                    environment=env,
                    protected=cfg.gitops.protected(env),
                    alias_version=alias_version,
                    alias=alias if alias_version is not None else "",
                    overlay_version=release.model_version if release else None,
                    overlay_model=release.model_name if release else "",
                    overlay_commit=overlay.commit,
                    overlay_error=overlay.error,
                    pending=pending,
                    deployment=deployment,
                    problems=tuple(
                        _problems(
                            env,
                            cfg.gitops.protected(env),
                            registry.name,
                            alias_version,
                            release.model_name if release else "",
                            release.model_version if release else None,
                            overlay.error,
                            pending,
                            deployment,
                        )
                    ),
                )
            )
    return statuses


def _problems(
    env: str,
    protected: bool,
    model: str,
    alias: str | None,
    overlay_model: str,
    overlay: str | None,
    overlay_error: str,
    pending: tuple[PendingReview, ...],
    deployment: DeploymentState | None,
) -> list[str]:
    problems = []
    if overlay_error:
        problems.append(f"{env}: the overlay cannot be read: {overlay_error}")
    elif overlay is not None and overlay_model != model:
        problems.append(f"{env}: the overlay serves model {overlay_model}, not {model}")
    elif alias != overlay:
        shown_alias = "none" if alias is None else f"v{alias}"
        if overlay is None:
            problems.append(f"{env}: alias {shown_alias}, but the overlay names no release")
        else:
            why = "merged, alias not synced yet" if protected else "the promotion did not move the alias"
            problems.append(
                f"{env}: alias {shown_alias}, overlay v{overlay} ({why} - run refinery models sync)"
            )
    for review in pending:
        what = f"v{review.version}" if review.version else "another release"
        problems.append(
            f"{env}: {what} waits for review on {review.branch} (commit {review.commit[:12]}); once it is"
            " merged, run refinery models sync"
        )
    if deployment is not None:
        expected = overlay or "none"
        if deployment.error:
            problems.append(f"{env}: cluster: {deployment.error}")
        elif deployment.model_version != expected:
            shown = "nothing released" if expected == "none" else f"v{expected}"
            running = (
                "nothing released" if deployment.model_version == "none" else f"v{deployment.model_version}"
            )
            problems.append(
                f"{env}: the overlay names {shown} but {deployment.namespace}/{deployment.name} runs {running}"
                " (Argo CD has not synced the overlay yet)"
            )
        elif not deployment.rolled_out:
            problems.append(
                f"{env}: {deployment.namespace}/{deployment.name} is {deployment.rollout()} of v{expected}"
            )
    return problems

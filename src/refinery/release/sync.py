"""After review: move each environment's champion alias to what its overlay serves.

In a protected environment a promotion ends as a review branch (:mod:`refinery.release.promote`). A
reviewer merges it; then :func:`sync_aliases` (``refinery models sync``; the drift monitor calls it before
each check) reads each environment's overlay on ``gitops.branch`` and, where it names version N of this
model while the environment's alias names another, checks that the overlay's Bento (tag and SHA-256) is
what was packaged for N, records the champion tags (:func:`refinery.registry.champions.champion_tags`,
the commit being the overlay's last change) and moves the alias; a mismatching Bento is refused, naming
both. Running it again changes nothing. A sync that finds the overlay naming the version an older
registry's plain ``champion`` alias names moves ``champion-<environment>`` to it and changes nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from refinery.errors import RegistryError
from refinery.registry.champions import (
    PENDING_ACTION,
    PENDING_BRANCH,
    PENDING_REASON,
    champion_tags,
    environment_tag,
    move_alias,
    named,
    pending_tags,
)
from refinery.release.package import packaged
from refinery.results import Record

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.gitops.repo import Overlay, Release
    from refinery.registry.mlflow_registry import ModelVersionInfo, Registry

SyncOutcome = Literal["in_sync", "moved", "migrated", "unreleased", "other_model", "refused"]


@dataclass(frozen=True)
class AliasSync(Record):
    """What :func:`sync_aliases` found and did for one environment.

    Attributes:
        environment: The environment (overlay folder).
        outcome: ``in_sync`` (the alias names what the overlay names), ``moved`` (the alias was moved
            to it), ``migrated`` (an older registry's plain ``champion`` alias, naming it, was replaced by
            ``champion-<environment>``), ``unreleased`` (the overlay names no release; the alias, if
            any, is left alone), ``other_model`` (the overlay serves another registered model), or
            ``refused`` (the overlay names a version whose packaged Bento differs, that is not in the
            registry, that was never packaged, or the overlay cannot be read).
        version: The version the overlay names (None when it names none).
        previous: The version the alias named before (None: none).
        commit: The last commit of the GitOps branch that changed the overlay.
        message: One line a person can read.
    """

    environment: str
    outcome: SyncOutcome
    version: str | None
    previous: str | None
    commit: str
    message: str

    @property
    def changed(self) -> bool:
        """Whether an alias moved."""
        return self.outcome in {"moved", "migrated"}


def sync_aliases(
    cfg: RunConfig, environments: Sequence[str] | None = None, *, registry: Registry | None = None
) -> list[AliasSync]:
    """Move each environment's champion alias to the version its overlay on ``gitops.branch`` names
    (the overlay being the truth once a review branch was merged); see the module. Idempotent, prints
    nothing; the drift monitor calls it before each check.

    Args:
        cfg: The run configuration (registry, GitOps repository and branch).
        environments: Only these environments (default: every overlay in the repository).
        registry: The registry to use (default: one for ``cfg.registry``).

    Returns:
        One result per environment, in the repository's order (by name).

    Raises:
        GitOpsError: The repository cannot be read, or an environment asked for has no overlay.
        RegistryError: The registry is unreachable.
    """
    from refinery.errors import GitOpsError
    from refinery.gitops.repo import read_state
    from refinery.registry.mlflow_registry import Registry

    registry = registry or Registry(cfg.registry)
    state = read_state(cfg.gitops)
    known = [overlay.environment for overlay in state.overlays]
    unknown = [env for env in environments or () if env not in known]
    if unknown:
        raise GitOpsError(
            f"GitOps repository {state.repository} has no environment {', '.join(map(repr, unknown))} (no "
            f"k8s/overlays/<environment>/kustomization.yaml on branch {state.branch!r}); available "
            f"environments: {', '.join(known) or '(none)'}"
        )
    return [
        _Sync.of(cfg, registry, overlay, state.branch).run()
        for overlay in state.overlays
        if environments is None or overlay.environment in environments
    ]


@dataclass(frozen=True)
class _Sync:
    """The sync of one environment: its overlay, and the alias as it stands (``current``; ``own`` is
    ``champion-<environment>``'s version, None when only an older registry's plain alias names one)."""

    registry: Registry
    overlay: Overlay
    branch: str
    legacy: bool
    own: str | None
    current: str | None

    @classmethod
    def of(cls, cfg: RunConfig, registry: Registry, overlay: Overlay, branch: str) -> _Sync:
        from refinery.registry.mlflow_registry import LEGACY_CHAMPION, champion_alias

        legacy = overlay.environment == cfg.gitops.environment
        aliases = registry.aliases()
        own = aliases.get(champion_alias(overlay.environment))
        current = own if own is not None or not legacy else aliases.get(LEGACY_CHAMPION)
        return cls(registry, overlay, branch, legacy, own, current)

    def result(self, outcome: SyncOutcome, message: str, version: str | None = None) -> AliasSync:
        return AliasSync(
            self.overlay.environment, outcome, version, self.current, self.overlay.commit, message
        )

    def run(self) -> AliasSync:
        from refinery.registry.mlflow_registry import LEGACY_CHAMPION

        env, release = self.overlay.environment, self.overlay.release
        if self.overlay.error:
            return self.result("refused", self.overlay.error)
        if release is None:
            left = f"; champion-{env} ({named(self.current)}) is left as it is" if self.current else ""
            return self.result("unreleased", f"the {env} overlay names no release{left}")
        version = release.model_version
        if release.model_name != self.registry.name:
            return self.result(
                "other_model",
                f"the {env} overlay serves {release.model_name}, not {self.registry.name}",
                version,
            )
        if self.current != version:
            return self.adopt(release)
        if self.own is None:
            move_alias(self.registry, version, env, legacy=True)
            return self.result(
                "migrated",
                f"champion-{env} now names version {version} (was the plain {LEGACY_CHAMPION!r})",
                version,
            )
        return self.result("in_sync", f"champion-{env} names version {version}, as the overlay does", version)

    def adopt(self, release: Release) -> AliasSync:
        """Move the alias to the version ``release`` names, if it is what was packaged for it."""
        env, version = self.overlay.environment, release.model_version
        try:
            info = self.registry.get(version)
        except RegistryError as exc:
            return self.result(
                "refused",
                f"the {env} overlay names version {version}, which the registry cannot give: {exc}",
                version,
            )
        refusal = self.mismatch(info, release)
        if refusal:
            return self.result("refused", refusal, version)
        self.registry.tag(version, self.tags(info, release))
        move_alias(self.registry, version, env, legacy=self.legacy)
        self.registry.untag(version, pending_tags(env))
        return self.result(
            "moved", f"champion-{env} moved from {named(self.current)} to version {version}", version
        )

    def mismatch(self, info: ModelVersionInfo, release: Release) -> str:
        """Why the overlay's release is not what was packaged for the version it names ("" when it is)."""
        env, version = self.overlay.environment, release.model_version
        bento = packaged(info.tags)
        if bento is None:
            return (
                f"the {env} overlay names version {version}, which was never packaged: champion-{env} stays"
            )
        if (bento.bento_tag, bento.bento_sha256) != (release.bento_tag, release.bento_sha256):
            return (
                f"the {env} overlay names version {version} with Bento {release.bento_tag} (SHA-256 "
                f"{release.bento_sha256[:12]}...), but version {version} was packaged as {bento.bento_tag} "
                f"(SHA-256 {bento.bento_sha256[:12]}...): champion-{env} stays on {named(self.current)}"
            )
        return ""

    def tags(self, info: ModelVersionInfo, release: Release) -> dict[str, str]:
        """The champion tags of the version the overlay names: a merged review branch's action and
        reason, else a sync's own."""
        env = self.overlay.environment
        pending_branch = info.tags.get(environment_tag(env, PENDING_BRANCH))
        if pending_branch:
            action = info.tags.get(environment_tag(env, PENDING_ACTION), "promote")
            why = f"{info.tags.get(environment_tag(env, PENDING_REASON), '-')} (merged {pending_branch})"
        else:
            action = "promote"
            why = f"refinery models sync: {self.branch} names it since {self.overlay.commit[:12]}"
        return champion_tags(
            env,
            image=release.image,
            commit=self.overlay.commit,
            action=action,
            reason=why,
            replaced=self.current,
        )

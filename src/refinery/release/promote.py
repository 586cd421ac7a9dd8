"""The promotion itself: an environment's champion alias and its GitOps overlay move together, or
neither does. Every way a version becomes champion (:mod:`refinery.release.flows`) ends in
:func:`promote_version`.

A promotion is for one environment, ``gitops.environment`` by default. Two pipeline runs can finish at
the same moment, each with a challenger that passed the gate against the same champion. Only one may
replace it: the other was judged against a champion that is no longer the one serving. The GitOps push
orders them, because git lands a push only on the branch head it was built on (the ref is locked and
compared; non-fast-forward pushes are refused). A promotion

1. pins the serving image by the digest the container registry holds for its tag (a commit can only
   name an image that exists), checks that the version's Bento is in the Bento store with the SHA-256
   recorded at packaging, and that the environment's champion is the version the challenger was
   evaluated against (else another promotion has already finished);
2. commits the release to the environment's overlay on a fresh clone, after checking that the overlay
   also names that champion, and pushes; a push that lost a race is redone on a new clone, which now
   names the other release, so it is refused (another promotion is finishing);
3. tags the version (``<environment>.serving_image``, ``.gitops_commit``, ``.champion_since``,
   ``.champion_reason``, ``.replaced_champion``; :mod:`refinery.registry.champions`) and moves
   ``champion-<environment>``, last.

Should step 3 fail (the registry went away after the push), the commit is reverted by a second one, so
the overlay does not stay on a version that is not champion; if the revert fails too, the error says
what each side names and how to repair it. A step that is retried after it pushed finds its own release
in the overlay and only moves the alias.

**Protected environments** (``gitops.protected_environments``, e.g. prod, where Argo CD syncs by hand)
change only through review. Steps 1 and 2 are the same, but the commit is pushed to the branch
``promote/<environment>/<model>-v<N>`` (:func:`refinery.gitops.repo.propose`), never to ``gitops.branch``;
the version gets ``<environment>.pending_branch``, ``.pending_commit``, ``.pending_since``,
``.pending_action`` and ``.pending_reason``, and the alias does not move. A reviewer merges the branch.
Then :func:`refinery.release.sync.sync_aliases` moves the alias. So for a protected environment the
order is: review branch pushed, merged by a person, alias moved by the next sync; the alias never names a
version the branch does not serve.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refinery.errors import PromotionConflict, RefineryError
from refinery.registry.champions import (
    PENDING_ACTION,
    PENDING_BRANCH,
    PENDING_COMMIT,
    PENDING_REASON,
    PENDING_SINCE,
    Action,
    champion_tags,
    environment_tag,
    move_alias,
    named,
    now,
    pending_tags,
)
from refinery.release.package import check_bento, pin_image
from refinery.results import Record

if TYPE_CHECKING:
    from refinery.config import GitOpsConfig, RunConfig
    from refinery.gitops.repo import ProposalResult, Release
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import Registry


@dataclass(frozen=True)
class PromotionRecord(Record):
    """What :func:`promote_version` did.

    Attributes:
        name: Registered model name.
        version: The new champion (or, while ``pending_branch`` is set, the one waiting for review).
        previous: The champion it replaced (replaces, when pending), or None for the first one.
        bento_tag: The Bento the overlay now serves.
        image: The serving image the overlay names (by digest, when it comes from a registry).
        commit: The GitOps commit naming the release (the existing head when it was already there; the
            review branch's head when pending).
        environment: The overlay promoted.
        action: ``promote`` or ``rollback``.
        reason: Why, as recorded (the gate's verdict, or the reason given by a person).
        changed: False when nothing new was committed and no alias moved (already champion, or the
            review branch already held this change).
        pending_branch: The review branch, for a protected environment whose change waits for review
            ("" otherwise): the alias has not moved.
        compare_url: The page to review ``pending_branch`` on, when one is known.
        merge_hint: The git commands that merge ``pending_branch`` (for a repository without web pages).
    """

    name: str
    version: str
    previous: str | None
    bento_tag: str
    image: str
    commit: str
    environment: str
    action: str
    reason: str
    changed: bool
    pending_branch: str = ""
    compare_url: str = ""
    merge_hint: str = ""

    @property
    def pending(self) -> bool:
        """Whether the promotion waits for its review branch to be merged."""
        return bool(self.pending_branch)


def gitops_for(cfg: RunConfig, environment: str) -> GitOpsConfig:
    """``cfg.gitops`` aimed at ``environment``."""
    if environment == cfg.gitops.environment:
        return cfg.gitops
    return cfg.gitops.model_copy(update={"environment": environment})


def promote_version(
    cfg: RunConfig,
    version: str,
    bento: PackageResult,
    *,
    image: str,
    expected_champion: str | None,
    action: Action = "promote",
    reason: str = "",
    registry: Registry | None = None,
    environment: str | None = None,
) -> PromotionRecord:
    """Make ``version`` an environment's champion: one GitOps commit, then ``champion-<environment>``
    (see the module); in a protected environment, a review branch and a pending record instead.

    Args:
        cfg: The run configuration (registry, GitOps repository, protected environments).
        version: The version to serve.
        bento: Its Bento, which must be in the Bento store with the recorded SHA-256.
        image: The serving image; pinned by its registry digest before anything moves.
        expected_champion: The environment's champion the decision was made against (None: there was
            none). The promotion is refused when the registry or the overlay names another.
        action: ``promote`` (a challenger replaces the champion) or ``rollback``.
        reason: Recorded in the version's tags and in the commit message.
        registry: The registry to use (default: one for ``cfg.registry``).
        environment: The environment (default: ``gitops.environment``).

    Returns:
        What was done; ``pending_branch`` set when the change waits for review.

    Raises:
        PromotionConflict: The champion is no longer ``expected_champion`` (another promotion won).
        ImageRegistryError: The serving image is not in its registry, or the registry is unreachable;
            nothing moved.
        PackagingError: The Bento is not in the store, or differs from what was packaged; nothing moved.
        RegistryError: The registry is unreachable or the version does not exist: nothing moved; or it
            failed after the commit, which was then reverted (the message says so, or says that the
            revert failed too and how to complete the promotion).
        GitOpsError: The commit (or review branch) could not be made; nothing moved.
    """
    from refinery.gitops.repo import Release
    from refinery.registry.mlflow_registry import Registry

    env = environment or cfg.gitops.environment
    legacy = env == cfg.gitops.environment
    registry = registry or Registry(cfg.registry)
    info = registry.get(version)
    pinned = pin_image(image)
    check_bento(bento, info.version)
    champion = registry.champion(env, legacy=legacy)
    promotion = _Promotion(
        registry,
        gitops_for(cfg, env),
        Release(registry.name, info.version, bento.bento_tag, bento.bento_uri, bento.bento_sha256, pinned),
        env,
        legacy,
        action,
        reason,
        champion.version if champion else None,
    )
    current = promotion.current
    if current != info.version and current != expected_champion:
        raise PromotionConflict(
            f"cannot {action} version {info.version} of {registry.name} in {env}: the champion is now "
            f"{named(current)}, but the decision was made against {named(expected_champion)}; another "
            "promotion finished first. Run the pipeline again to evaluate against the new champion."
        )
    # The overlay must name the same champion; a retry after our own push finds our release there.
    expected = (info.version,) if current == info.version else (expected_champion, info.version)
    landed = promotion.propose(expected) if promotion.gitops.protected() else promotion.commit(expected)
    if isinstance(landed, PromotionRecord):
        return landed
    commit, changed = landed
    promotion.make_champion(commit, changed)
    return promotion.record(current, commit, changed=True)


@dataclass(frozen=True)
class _Promotion:
    """One promotion of ``release`` in ``environment``, whose champion is ``current`` as it starts."""

    registry: Registry
    gitops: GitOpsConfig
    release: Release
    environment: str
    legacy: bool
    action: Action
    reason: str
    current: str | None

    @property
    def version(self) -> str:
        return self.release.model_version

    def record(
        self, previous: str | None, commit: str, *, changed: bool, proposal: ProposalResult | None = None
    ) -> PromotionRecord:
        """The :class:`PromotionRecord` of this promotion."""
        return PromotionRecord(
            name=self.release.model_name,
            version=self.version,
            previous=previous,
            bento_tag=self.release.bento_tag,
            image=self.release.image,
            commit=commit,
            environment=self.environment,
            action=self.action,
            reason=self.reason,
            changed=changed,
            pending_branch=proposal.branch if proposal else "",
            compare_url=(proposal.compare_url or "") if proposal else "",
            merge_hint=proposal.merge_hint if proposal else "",
        )

    def propose(self, expected: tuple[str | None, ...]) -> PromotionRecord | tuple[str, bool]:
        """Push the release to its review branch (a protected environment).

        Returns:
            The record when the change waits for review (or was already done), else the commit the
            alias now follows (the branch was merged before any sync) and False: nothing new was committed.
        """
        from refinery.gitops.repo import propose

        proposal = propose(
            self.gitops, self.release, expected=expected, action=self.action, reason=self.reason
        )
        if not proposal.merged:
            self._record_pending(proposal)
            return self.record(self.current, proposal.commit, changed=proposal.changed, proposal=proposal)
        if self.current == self.version:
            return self.record(None, proposal.commit, changed=False)
        # The branch already names it (merged before any sync): the alias follows, as sync would move it.
        return proposal.commit, False

    def commit(self, expected: tuple[str | None, ...]) -> PromotionRecord | tuple[str, bool]:
        """Commit the release to the overlay on ``gitops.branch``.

        Returns:
            The record when the version already was champion, else the commit and whether it is new.
        """
        from refinery.gitops.repo import promote as commit_release

        result = commit_release(
            self.gitops, self.release, expected=expected, action=self.action, reason=self.reason
        )
        if self.current == self.version:
            # Already champion (a retried step, or a repeated command): the overlay agrees now.
            if self.environment not in self.registry.champions():
                self._move_alias()  # an older registry's alias
            return self.record(None, result.commit, changed=result.changed)
        return result.commit, result.changed

    def make_champion(self, commit: str, changed: bool) -> None:
        """Record the promotion on the version and move the alias, last; on failure revert ``commit``
        when this promotion made it."""
        # The Bento's own tags were written when it was packaged (refinery.release.package).
        tags = champion_tags(
            self.environment,
            image=self.release.image,
            commit=commit,
            action=self.action,
            reason=self.reason or "-",
            replaced=self.current,
        )
        try:
            self.registry.tag(self.version, tags)
            self._move_alias()
        except RefineryError as exc:
            if not changed:
                raise
            self._revert(commit, exc)
        # Stale pending tags mislead no one (refinery status reads review branches from git): best effort.
        with contextlib.suppress(RefineryError):
            self.registry.untag(self.version, pending_tags(self.environment))

    def _move_alias(self) -> None:
        move_alias(self.registry, self.version, self.environment, legacy=self.legacy)

    def _revert(self, commit: str, exc: RefineryError) -> None:
        """Revert ``commit`` after the alias failed to move with ``exc``, and raise what happened."""
        from refinery.gitops.repo import revert

        env, version = self.environment, self.version
        try:
            revert(self.gitops, commit, f"moving the champion-{env} alias to version {version} failed: {exc}")
        except RefineryError as undo:
            raise type(exc)(
                f"{exc}; the GitOps commit {commit[:12]} naming version {version} could not be "
                f"reverted either ({undo}): the {env} overlay names version {version} while "
                f"champion-{env} is {named(self.current)}. Once both are reachable, `refinery models sync "
                f"--env {env}` completes this promotion (the commit is there, the alias follows)"
            ) from exc
        raise type(exc)(f"{exc}; the GitOps commit {commit[:12]} was reverted, nothing moved") from exc

    def _record_pending(self, proposal: ProposalResult) -> None:
        """Tag the version with the promotion waiting for review on ``proposal.branch``."""
        env = self.environment
        if not proposal.changed:
            # A retried promotion found its branch: keep the time it was first pushed.
            info = self.registry.get(self.version)
            if info.tags.get(environment_tag(env, PENDING_COMMIT)) == proposal.commit:
                return
        self.registry.tag(
            self.version,
            {
                environment_tag(env, PENDING_BRANCH): proposal.branch,
                environment_tag(env, PENDING_COMMIT): proposal.commit,
                environment_tag(env, PENDING_SINCE): now(),
                environment_tag(env, PENDING_ACTION): self.action,
                environment_tag(env, PENDING_REASON): self.reason or "-",
            },
        )

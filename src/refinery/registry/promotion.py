"""Promotion per environment: each environment's champion alias and its GitOps overlay move together,
or neither does.

Every GitOps environment (``k8s/overlays/<environment>``) has its own champion alias,
``champion-<environment>``: the version that environment serves. A promotion is for one environment,
``gitops.environment`` (the pipeline's promote step, ``refinery models promote``, ``refinery models
rollback``), or the one ``refinery models promote --env`` names (:func:`promote_to_environment`: what
another environment serves, if the version's recorded gate decision passed).

Two pipeline runs can finish at the same moment, each with a challenger that passed the gate against
the same champion. Only one may replace it: the other was judged against a champion that is no longer
the one serving. The GitOps push orders them, because git lands a push only on the branch head it was
built on (the ref is locked and compared; non-fast-forward pushes are refused). A promotion

1. pins the serving image by the digest the container registry holds for its tag (a commit can only
   name an image that exists), checks that the version's Bento is in the Bento store with the SHA-256
   recorded at packaging, and that the environment's champion is the version the challenger was
   evaluated against (else another promotion has already finished);
2. commits the release to the environment's overlay on a fresh clone, after checking that the overlay
   also names that champion, and pushes; a push that lost a race is redone on a new clone, which now
   names the other release, so it is refused (another promotion is finishing);
3. tags the version (``<environment>.serving_image``, ``.gitops_commit``, ``.champion_since``,
   ``.champion_reason``, ``.replaced_champion``) and moves ``champion-<environment>``, last.

Should step 3 fail (the registry went away after the push), the commit is reverted by a second one, so
the overlay does not stay on a version that is not champion; if the revert fails too, the error says
what each side names and how to repair it. A step that is retried after it pushed finds its own release
in the overlay and only moves the alias.

**Protected environments** (``gitops.protected_environments``, e.g. prod, where Argo CD syncs by hand)
change only through review. Steps 1 and 2 are the same, but the commit is pushed to the branch
``promote/<environment>/<model>-v<N>`` (:func:`refinery.gitops.repo.propose`), never to ``gitops.branch``;
the version gets ``<environment>.pending_branch``, ``.pending_commit``, ``.pending_since``,
``.pending_action`` and ``.pending_reason``, and the alias does not move. A reviewer merges the branch.
Then :func:`sync_aliases` (``refinery models sync``; the drift monitor calls it before each check) reads
each environment's overlay on ``gitops.branch`` and, where it names version N of this model while the
environment's alias names another, checks that the overlay's Bento (tag and SHA-256) is what was
packaged for N, records the tags of step 3 (the commit being the overlay's last change) and moves the
alias; a mismatching Bento is refused, naming both. Running it again changes nothing. So for a protected
environment the order is: review branch pushed, merged by a person, alias moved by the next sync; the
alias never names a version the branch does not serve.

**Upgrade from one champion alias.** Registries written before champions were per environment have a
plain ``champion`` alias and untagged-by-environment promotion tags (``gitops_commit``, ...), both
written for the configuration's ``gitops.environment``. They are read as that environment's champion and
records while it has no ``champion-<environment>`` (never for another environment), and the first
promotion, rollback or sync that moves ``champion-<environment>`` retires the plain alias (a sync that
finds the overlay naming the same version moves it without changing anything else).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from refinery.errors import GateRejected, PromotionConflict, RefineryError, RegistryError
from refinery.results import to_jsonable

if TYPE_CHECKING:
    from refinery.config import GitOpsConfig, RunConfig
    from refinery.evaluation.gate import GateDecision
    from refinery.gitops.repo import Overlay, ProposalResult, Release
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import ModelVersionInfo, Registry

#: Version tag naming the champion a version was evaluated against (``none`` for the first model).
EVALUATED_AGAINST = "compared_with_champion"
NO_CHAMPION = "none"
#: Version tag holding the gate's decision (``passed: 5 of 5 rules held``), written at registration and
#: again by ``refinery models promote``, which gates the version anew; promotion to a later environment
#: reads it. ``gate_by`` says which gate wrote it when it was not the registration's.
GATE = "gate"
GATE_BY = "gate_by"
#: Per-environment version tags (``<environment>.<field>``) a promotion records.
SERVING_IMAGE = "serving_image"
GITOPS_COMMIT = "gitops_commit"
CHAMPION_SINCE = "champion_since"
CHAMPION_REASON = "champion_reason"
REPLACED_CHAMPION = "replaced_champion"
#: Per-environment version tags of a promotion waiting for review in a protected environment.
PENDING_BRANCH = "pending_branch"
PENDING_COMMIT = "pending_commit"
PENDING_SINCE = "pending_since"
PENDING_ACTION = "pending_action"
PENDING_REASON = "pending_reason"
PENDING_FIELDS = (PENDING_BRANCH, PENDING_COMMIT, PENDING_SINCE, PENDING_ACTION, PENDING_REASON)

Action = Literal["promote", "rollback"]


def environment_tag(environment: str, field: str) -> str:
    """The version tag of ``field`` for ``environment``, e.g. ``prod.gitops_commit``."""
    return f"{environment}.{field}"


def recorded(info: ModelVersionInfo, environment: str, field: str, *, legacy: bool = False) -> str | None:
    """What a promotion recorded on ``info`` for ``environment`` (``<environment>.<field>``); with
    ``legacy`` (``environment`` is the configured one), the plain ``<field>`` tag of an older registry
    when there is none."""
    value = info.tags.get(environment_tag(environment, field))
    if value is None and legacy:
        value = info.tags.get(field)
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PromotionRecord:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


@dataclass(frozen=True)
class GateRecord:
    """The gate decision recorded on a version (its ``gate`` tag).

    Attributes:
        verdict: ``passed``, ``rejected`` or ``unknown`` (no decision recorded).
        text: The tag as recorded, with ``gate_by`` when set.
    """

    verdict: str
    text: str

    @property
    def passed(self) -> bool:
        """Whether the recorded decision let the version through."""
        return self.verdict == "passed"


def gate_summary(decision: GateDecision) -> str:
    """The ``gate`` tag of a decision: ``passed: 5 of 5 rules held`` or ``rejected: ...``."""
    held = sum(rule.passed for rule in decision.rules)
    return f"{'passed' if decision.passed else 'rejected'}: {held} of {len(decision.rules)} rules held"


def gate_record(info: ModelVersionInfo) -> GateRecord:
    """The gate decision recorded on ``info`` (``unknown`` when the version carries none)."""
    text = info.tags.get(GATE, "").strip()
    if not text:
        return GateRecord("unknown", "no gate decision recorded")
    verdict = text.partition(":")[0].strip().lower()
    by = info.tags.get(GATE_BY)
    return GateRecord(
        verdict if verdict in {"passed", "rejected"} else "unknown", f"{text} ({by})" if by else text
    )


def evaluated_against(info: ModelVersionInfo) -> str | None:
    """The champion version ``info`` was evaluated against at registration (None: it was the first).

    Raises:
        PromotionConflict: The version carries no such tag (registered outside the pipeline): which
            champion it beat is unknown, so it cannot be promoted automatically.
    """
    value = info.tags.get(EVALUATED_AGAINST)
    if value is None:
        raise PromotionConflict(
            f"version {info.version} of {info.name} has no {EVALUATED_AGAINST!r} tag, so the champion it "
            "was judged against is unknown; promote it with `refinery models promote`, which evaluates it now"
        )
    return None if value == NO_CHAMPION else value


def serving_image(cfg: RunConfig) -> str:
    """The serving image of the refinery release running this: the project image in ``images.registry``."""
    from refinery.version import Images

    return Images.default(registry=cfg.images.registry).project


def pin_image(image: str) -> str:
    """``image`` pinned by the digest its registry holds for the tag (podman's local storage has no
    registry: such a name is kept by tag).

    Raises:
        ImageRegistryError: The registry is unreachable, refuses the credentials or lacks the image.
    """
    from refinery.packaging.oci import ImageReference, resolve

    return image if ImageReference.parse(image).local else resolve(image).pinned


def package_registered(
    cfg: RunConfig,
    registry: Registry,
    version: str,
    model_dir: Path | None = None,
    data_dir: Path | None = None,
) -> PackageResult:
    """The Bento of a registered version as this release packages it, published and recorded on the version.

    The model (``model_dir``, or downloaded from the registry) goes through
    :func:`refinery.packaging.bento.package`, whose Bento tag hashes the model with the build context
    (the service, refinery's own code, the pinned requirements): a Bento this release already stored is
    reused, never rebuilt, and a Bento an earlier release packaged is not served by this release's image.
    The version's tags then name it (with the SHA-256 of the stored file). Running it again after a crash
    anywhere leaves one Bento and one set of tags.

    With ``packaging.runtime: onnx-int8`` the int8 export is checked against fp32 on ``data_dir``'s test
    split first (:mod:`refinery.packaging.runtime`); the runtime chosen and the comparison are tagged.

    Raises:
        RegistryError: The version cannot be read, downloaded or tagged.
        PackagingError: Packaging failed, or the store cannot be reached.
    """
    import tempfile

    from refinery.packaging.bento import package
    from refinery.packaging.runtime import choose_runtime

    info = registry.get(version)
    with tempfile.TemporaryDirectory(prefix="refinery-package-") as tmp:
        source = model_dir or registry.download(info.version, "model", Path(tmp))
        choice = choose_runtime(cfg, source, data_dir, Path(tmp))
        result = package(cfg, choice.model_dir, info.version, runtime=choice.runtime)
    registry.tag(info.version, {**result.tags(), **choice.tags()})
    return result


def _gitops_for(cfg: RunConfig, environment: str) -> GitOpsConfig:
    """``cfg.gitops`` aimed at ``environment``."""
    if environment == cfg.gitops.environment:
        return cfg.gitops
    return cfg.gitops.model_copy(update={"environment": environment})


def _move_alias(registry: Registry, version: str, environment: str, *, legacy: bool) -> None:
    """Point ``champion-<environment>`` at ``version``; for the configured environment, retire the plain
    ``champion`` alias of an older registry, which the new alias now shadows."""
    from refinery.registry.mlflow_registry import LEGACY_CHAMPION

    registry.set_champion(version, environment)
    if legacy:
        # Best effort: the alias is no longer read for this environment; the next write retries.
        with contextlib.suppress(RefineryError):
            registry.remove_alias(LEGACY_CHAMPION)


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
    from refinery.errors import PackagingError
    from refinery.gitops.repo import Release, propose, revert
    from refinery.gitops.repo import promote as commit_release
    from refinery.packaging import store
    from refinery.registry.mlflow_registry import Registry

    env = environment or cfg.gitops.environment
    gitops = _gitops_for(cfg, env)
    legacy = env == cfg.gitops.environment
    registry = registry or Registry(cfg.registry)
    info = registry.get(version)
    pinned = pin_image(image)
    if store.sha256(bento.bento_uri) != bento.bento_sha256:
        raise PackagingError(
            f"Bento {bento.bento_tag} at {bento.bento_uri} differs from what was packaged (SHA-256"
            f" {bento.bento_sha256[:12]}...); package version {info.version} again"
        )
    champion = registry.champion(env, legacy=legacy)
    current = champion.version if champion else None
    release = Release(
        registry.name, info.version, bento.bento_tag, bento.bento_uri, bento.bento_sha256, pinned
    )
    record = _Recorder(release, env, action, reason)
    if current != info.version and current != expected_champion:
        raise PromotionConflict(
            f"cannot {action} version {info.version} of {registry.name} in {env}: the champion is now "
            f"{_named(current)}, but the decision was made against {_named(expected_champion)}; another "
            "promotion finished first. Run the pipeline again to evaluate against the new champion."
        )
    # The overlay must name the same champion; a retry after our own push finds our release there.
    expected = (info.version,) if current == info.version else (expected_champion, info.version)
    if gitops.protected():
        proposal = propose(gitops, release, expected=expected, action=action, reason=reason)
        if not proposal.merged:
            _record_pending(registry, info.version, env, proposal, action, reason)
            return record(current, proposal.commit, changed=proposal.changed, proposal=proposal)
        if current == info.version:
            return record(None, proposal.commit, changed=False)
        # The branch already names it (merged before any sync): the alias follows, as sync would move it.
        commit, changed = proposal.commit, False
    else:
        result = commit_release(gitops, release, expected=expected, action=action, reason=reason)
        if current == info.version:
            # Already champion (a retried step, or a repeated command): the overlay agrees now.
            if champion is not None and env not in registry.champions():
                _move_alias(registry, info.version, env, legacy=legacy)  # an older registry's alias
            return record(None, result.commit, changed=result.changed)
        commit, changed = result.commit, result.changed
    # The Bento's own tags were written when it was packaged (package_registered).
    tags = {
        environment_tag(env, SERVING_IMAGE): pinned,
        environment_tag(env, GITOPS_COMMIT): commit,
        environment_tag(env, CHAMPION_SINCE): _now(),
        environment_tag(env, CHAMPION_REASON): f"{action}: {reason or '-'}",
    }
    # What a rollback goes back to; a rollback keeps the target's own, so repeated rollbacks walk back.
    if action == "promote":
        tags[environment_tag(env, REPLACED_CHAMPION)] = current or NO_CHAMPION
    try:
        registry.tag(info.version, tags)
        _move_alias(registry, info.version, env, legacy=legacy)
    except RefineryError as exc:
        if not changed:
            raise
        try:
            revert(gitops, commit, f"moving the champion-{env} alias to version {info.version} failed: {exc}")
        except RefineryError as undo:
            raise type(exc)(
                f"{exc}; the GitOps commit {commit[:12]} naming version {info.version} could not be "
                f"reverted either ({undo}): the {env} overlay names version {info.version} while "
                f"champion-{env} is {_named(current)}. Once both are reachable, `refinery models sync "
                f"--env {env}` completes this promotion (the commit is there, the alias follows)"
            ) from exc
        raise type(exc)(f"{exc}; the GitOps commit {commit[:12]} was reverted, nothing moved") from exc
    # Stale pending tags mislead no one (refinery status reads review branches from git): best effort.
    with contextlib.suppress(RefineryError):
        registry.untag(info.version, [environment_tag(env, field) for field in PENDING_FIELDS])
    return record(current, commit, changed=True)


def _record_pending(
    registry: Registry, version: str, environment: str, proposal: ProposalResult, action: str, reason: str
) -> None:
    """Tag ``version`` with the promotion waiting for review on ``proposal.branch``."""
    if not proposal.changed:
        # A retried promotion found its branch: keep the time it was first pushed.
        info = registry.get(version)
        if info.tags.get(environment_tag(environment, PENDING_COMMIT)) == proposal.commit:
            return
    registry.tag(
        version,
        {
            environment_tag(environment, PENDING_BRANCH): proposal.branch,
            environment_tag(environment, PENDING_COMMIT): proposal.commit,
            environment_tag(environment, PENDING_SINCE): _now(),
            environment_tag(environment, PENDING_ACTION): action,
            environment_tag(environment, PENDING_REASON): reason or "-",
        },
    )


def _named(version: str | None) -> str:
    return "no champion" if version is None else f"version {version}"


@dataclass(frozen=True)
class _Recorder:
    """Makes the :class:`PromotionRecord` of one promotion."""

    release: Release
    environment: str
    action: str
    reason: str

    def __call__(
        self,
        previous: str | None,
        commit: str,
        *,
        changed: bool,
        proposal: ProposalResult | None = None,
    ) -> PromotionRecord:
        return PromotionRecord(
            name=self.release.model_name,
            version=self.release.model_version,
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


@dataclass(frozen=True)
class ManualPromotion:
    """The outcome of :func:`promote_manually`: the gate's decision and, unless it stopped there, the record.

    Attributes:
        decision: The gate's decision on the version against the current champion.
        record: The promotion, or None when the gate rejected the version and nothing was forced.
    """

    decision: Any
    record: PromotionRecord | None


def _test_set_of(registry: Registry, version: str, slice_columns: tuple[str, ...], into: Path) -> Path:
    """A prepared-data folder holding the test set ``version`` was evaluated on at registration (its
    ``evaluation/predictions.parquet``): text, label and the slice columns."""
    import pandas as pd

    from refinery.evaluation.evaluate import PREDICTIONS_FILE

    evaluation = registry.download(version, "evaluation", into)
    path = evaluation / PREDICTIONS_FILE
    if not path.is_file():
        raise RegistryError(
            f"version {version} of {registry.name} has no evaluation/{PREDICTIONS_FILE} to evaluate on; "
            "pass --data with a prepared dataset folder"
        )
    frame = pd.read_parquet(path)
    columns = [c for c in ("text", "label", *slice_columns) if c in frame.columns]
    data_dir = into / "test-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    frame[columns].to_parquet(data_dir / "test.parquet", index=False)
    return data_dir


def promote_manually(
    cfg: RunConfig,
    reference: str,
    *,
    force_reason: str | None = None,
    data_dir: Path | None = None,
) -> ManualPromotion:
    """``refinery models promote``: evaluate a registered version against the configured environment's
    champion, gate it, package it when it has no Bento yet, and promote it there.

    The test set is ``data_dir/test.parquet`` when given, else the one the version was evaluated on at
    registration. With ``force_reason`` a rejected version is promoted anyway and the reason recorded
    (version tag and commit message); the gate still runs, so its verdict is recorded beside it. The
    decision becomes the version's ``gate`` tag (with ``gate_by``), the record a promotion to a later
    environment reads.

    Raises:
        RefineryError: The version is already champion, or cannot be found, evaluated or packaged.
        PromotionConflict: The champion changed while this ran.
    """
    import tempfile

    from refinery.evaluation.evaluate import evaluate
    from refinery.evaluation.gate import decide
    from refinery.registry.mlflow_registry import Registry

    if force_reason is not None and not force_reason.strip():
        raise RefineryError("--force needs --reason TEXT: it is recorded with the promotion")
    env = cfg.gitops.environment
    registry = Registry(cfg.registry)
    info = registry.resolve(reference, environment=env)
    champion = registry.champion(env, legacy=True)
    if champion is not None and champion.version == info.version:
        raise RefineryError(f"version {info.version} of {registry.name} is already the champion of {env}")
    with tempfile.TemporaryDirectory(prefix="refinery-promote-") as tmp:
        work = Path(tmp)
        model_dir = registry.download(info.version, "model", work / "challenger")
        champion_dir = registry.download(champion.version, "model", work / "champion") if champion else None
        test_dir = data_dir or _test_set_of(registry, info.version, cfg.data.slice_columns, work)
        result = evaluate(
            cfg,
            test_dir,
            model_dir,
            champion_dir,
            work / "evaluation",
            champion_version=champion.version if champion else None,
        )
        decision = decide(cfg.gate, result)
        if not decision.passed and force_reason is None:
            return ManualPromotion(decision, None)
        bento = package_registered(cfg, registry, info.version, model_dir)
    against = f"against version {champion.version}" if champion else "as the first model"
    registry.tag(
        info.version,
        {GATE: gate_summary(decision), GATE_BY: f"refinery models promote in {env} {against}, {_now()}"},
    )
    verdict = "passed" if decision.passed else "rejected"
    reason = f"forced: {force_reason.strip()} (gate {verdict})" if force_reason else f"gate {verdict}"
    record = promote_version(
        cfg,
        info.version,
        bento,
        image=serving_image(cfg),
        expected_champion=champion.version if champion else None,
        reason=f"by refinery models promote, {reason}",
        registry=registry,
    )
    return ManualPromotion(decision, record)


def promote_to_environment(
    cfg: RunConfig,
    environment: str,
    *,
    source: str | None = None,
    reference: str | None = None,
    force_reason: str | None = None,
) -> PromotionRecord:
    """``refinery models promote --env ENVIRONMENT``: promote what ``source`` serves to ``environment``,
    through the version's recorded gate decision, with the same Bento and serving image.

    No evaluation runs: the version was gated when it was registered or promoted (``gate`` tag), and
    only a version whose recorded decision passed goes on, unless ``force_reason`` overrides it (the
    reason and the recorded decision are then both kept in the tags and the commit message). In a
    protected environment the change goes to a review branch (see the module).

    Args:
        cfg: The run configuration; ``gitops.environment`` is the default source.
        environment: The environment to promote to.
        source: The environment whose champion to promote (default: ``gitops.environment``).
        reference: The version, when named: it must be what ``source`` serves, unless forced.
        force_reason: Promote even against the gate record (or another version than ``source``
            serves), recording why.

    Raises:
        GateRejected: The version's recorded gate decision is not a pass, and nothing was forced.
        RefineryError: ``source`` serves nothing or is ``environment``, the version is not what it
            serves, was never packaged, or has no serving image recorded.
        PromotionConflict: The environment's champion changed while this ran.
    """
    from refinery.gitops.repo import current_release
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import Registry, champion_alias

    if force_reason is not None and not force_reason.strip():
        raise RefineryError("--force needs --reason TEXT: it is recorded with the promotion")
    configured = cfg.gitops.environment
    source = source or configured
    if source == environment:
        raise RefineryError(
            f"{environment} is both the source and the target; name the environment to promote from with"
            " --from (the default is gitops.environment)"
        )
    registry = Registry(cfg.registry)
    served = registry.champion(source, legacy=source == configured)
    if served is None:
        raise RefineryError(
            f"{source} serves no version of {registry.name} (no alias {champion_alias(source)} in "
            f"{registry.uri}): promote one there first"
        )
    info = served if reference is None else registry.resolve(reference, environment=configured)
    if info.version != served.version and force_reason is None:
        raise RefineryError(
            f"version {info.version} of {registry.name} is not what {source} serves (version "
            f"{served.version}); promote it to {source} first, name its environment with --from, or "
            "--force --reason TEXT"
        )
    gate = gate_record(info)
    if not gate.passed and force_reason is None:
        raise GateRejected(
            f"version {info.version} of {registry.name} is not promoted to {environment}: its recorded gate "
            f"decision is {gate.text!r} (--force --reason TEXT overrides, and is recorded)"
        )
    bento = PackageResult.from_tags(info.tags)
    if bento is None:
        raise RefineryError(
            f"version {info.version} of {registry.name} was never packaged, so it was never served"
        )
    image = recorded(info, source, SERVING_IMAGE, legacy=source == configured)
    if image is None:
        overlay = current_release(_gitops_for(cfg, source))
        if overlay is None or overlay.model_version != info.version:
            raise RefineryError(
                f"version {info.version} of {registry.name} has no {environment_tag(source, SERVING_IMAGE)}"
                f" tag and the {source} overlay does not name it: which image served it is unknown"
            )
        image = overlay.image
    target = registry.champion(environment, legacy=environment == configured)
    where = f"from {source}, gate record: {gate.text}"
    reason = f"forced: {force_reason.strip()} ({where})" if force_reason else where
    return promote_version(
        cfg,
        info.version,
        bento,
        image=image,
        expected_champion=target.version if target else None,
        reason=f"by refinery models promote --env {environment}, {reason}",
        registry=registry,
        environment=environment,
    )


def rollback(
    cfg: RunConfig, to: str | None = None, reason: str = "", *, environment: str | None = None
) -> PromotionRecord:
    """``refinery models rollback``: make an earlier version an environment's champion again, with its
    GitOps commit (a review branch in a protected environment).

    Args:
        cfg: The run configuration.
        to: The version to go back to; default the one the current champion replaced there.
        reason: Recorded in the version's tags and in the commit message.
        environment: The environment (default: ``gitops.environment``).

    Raises:
        RefineryError: There is no champion, no earlier one is recorded, or the target was never
            packaged (it was never served).
        PromotionConflict: The champion changed while this ran.
    """
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import Registry

    env = environment or cfg.gitops.environment
    legacy = env == cfg.gitops.environment
    registry = Registry(cfg.registry)
    champion = registry.champion(env, legacy=legacy)
    if champion is None:
        raise RefineryError(f"{registry.name} has no champion in {env} to roll back ({registry.uri})")
    target = to or recorded(champion, env, REPLACED_CHAMPION, legacy=legacy)
    if target is None or target == NO_CHAMPION:
        raise RefineryError(
            f"version {champion.version} of {registry.name} replaced no earlier champion in {env}; "
            "name the version to go back to with --to"
        )
    info = registry.get(target)
    if info.version == champion.version:
        raise RefineryError(f"version {info.version} of {registry.name} is already the champion of {env}")
    bento = PackageResult.from_tags(info.tags)
    if bento is None:
        raise RefineryError(
            f"version {info.version} of {registry.name} was never packaged, so it was never served; "
            f"`refinery models promote {info.version}` evaluates, packages and promotes it"
        )
    why = reason.strip() or "no reason given"
    # The image it was served with before, so that the rollback restores exactly that release.
    return promote_version(
        cfg,
        info.version,
        bento,
        image=recorded(info, env, SERVING_IMAGE, legacy=legacy) or serving_image(cfg),
        expected_champion=champion.version,
        action="rollback",
        reason=f"from version {champion.version}: {why}",
        registry=registry,
        environment=env,
    )


# ------------------------------------------------------------------------------------------------ sync

SyncOutcome = Literal["in_sync", "moved", "migrated", "unreleased", "other_model", "refused"]


@dataclass(frozen=True)
class AliasSync:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


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
        _sync_one(cfg, registry, overlay, state.branch)
        for overlay in state.overlays
        if environments is None or overlay.environment in environments
    ]


def _sync_one(cfg: RunConfig, registry: Registry, overlay: Overlay, branch: str) -> AliasSync:
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import LEGACY_CHAMPION, champion_alias

    env = overlay.environment
    legacy = env == cfg.gitops.environment
    aliases = registry.aliases()
    own = aliases.get(champion_alias(env))
    current = own if own is not None or not legacy else aliases.get(LEGACY_CHAMPION)
    release = overlay.release

    def result(outcome: SyncOutcome, message: str, version: str | None = None) -> AliasSync:
        return AliasSync(env, outcome, version, current, overlay.commit, message)

    if overlay.error:
        return result("refused", overlay.error)
    if release is None:
        left = f"; champion-{env} ({_named(current)}) is left as it is" if current else ""
        return result("unreleased", f"the {env} overlay names no release{left}")
    named = release.model_version
    if release.model_name != registry.name:
        return result(
            "other_model", f"the {env} overlay serves {release.model_name}, not {registry.name}", named
        )
    if current == named:
        if own is None:
            _move_alias(registry, named, env, legacy=True)
            return result(
                "migrated",
                f"champion-{env} now names version {named} (was the plain {LEGACY_CHAMPION!r})",
                named,
            )
        return result("in_sync", f"champion-{env} names version {named}, as the overlay does", named)
    try:
        info = registry.get(named)
    except RegistryError as exc:
        return result(
            "refused",
            f"the {env} overlay names version {named}, which the registry cannot give: {exc}",
            named,
        )
    packaged = PackageResult.from_tags(info.tags)
    if packaged is None:
        return result(
            "refused",
            f"the {env} overlay names version {named}, which was never packaged: champion-{env} stays",
            named,
        )
    if (packaged.bento_tag, packaged.bento_sha256) != (release.bento_tag, release.bento_sha256):
        return result(
            "refused",
            f"the {env} overlay names version {named} with Bento {release.bento_tag} (SHA-256 "
            f"{release.bento_sha256[:12]}...), but version {named} was packaged as {packaged.bento_tag} "
            f"(SHA-256 {packaged.bento_sha256[:12]}...): champion-{env} stays on {_named(current)}",
            named,
        )
    pending_branch = info.tags.get(environment_tag(env, PENDING_BRANCH))
    action = info.tags.get(environment_tag(env, PENDING_ACTION), "promote") if pending_branch else "promote"
    if pending_branch:
        why = f"{info.tags.get(environment_tag(env, PENDING_REASON), '-')} (merged {pending_branch})"
    else:
        why = f"refinery models sync: {branch} names it since {overlay.commit[:12]}"
    tags = {
        environment_tag(env, SERVING_IMAGE): release.image,
        environment_tag(env, GITOPS_COMMIT): overlay.commit,
        environment_tag(env, CHAMPION_SINCE): _now(),
        environment_tag(env, CHAMPION_REASON): f"{action}: {why}",
    }
    if action == "promote":
        tags[environment_tag(env, REPLACED_CHAMPION)] = current or NO_CHAMPION
    registry.tag(named, tags)
    _move_alias(registry, named, env, legacy=legacy)
    registry.untag(named, [environment_tag(env, field) for field in PENDING_FIELDS])
    return result("moved", f"champion-{env} moved from {_named(current)} to version {named}", named)

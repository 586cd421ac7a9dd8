"""What the registry records about promotion: each environment's champion alias and the version tags a
promotion, a rollback or a sync writes. The flow that writes them lives in :mod:`refinery.release`.

Every GitOps environment (``k8s/overlays/<environment>``) has its own champion alias,
``champion-<environment>``: the version that environment serves. A version carries, per environment,
``<environment>.serving_image``, ``.gitops_commit``, ``.champion_since``, ``.champion_reason`` and
``.replaced_champion`` once it served there, and ``<environment>.pending_branch``, ``.pending_commit``,
``.pending_since``, ``.pending_action`` and ``.pending_reason`` while its promotion waits for review in a
protected environment. Its ``gate`` tag holds the gate's decision, and ``compared_with_champion`` the
champion it was evaluated against at registration.

**Upgrade from one champion alias.** Registries written before champions were per environment have a
plain ``champion`` alias and untagged-by-environment promotion tags (``gitops_commit``, ...), both
written for the configuration's ``gitops.environment``. They are read as that environment's champion and
records while it has no ``champion-<environment>`` (never for another environment), and the first
promotion, rollback or sync that moves ``champion-<environment>`` retires the plain alias
(:func:`move_alias`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from refinery.errors import PromotionConflict, RefineryError
from refinery.results import Record

if TYPE_CHECKING:
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


def now() -> str:
    """The time a tag records: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def named(version: str | None) -> str:
    """``version 3``, or ``no champion``."""
    return "no champion" if version is None else f"version {version}"


def champion_tags(
    environment: str, *, image: str, commit: str, action: str, reason: str, replaced: str | None
) -> dict[str, str]:
    """The tags of a version that became ``environment``'s champion through ``commit``.

    A promotion records what it replaced (``replaced`` or ``none``), which a rollback goes back to; a
    rollback keeps the target's own, so repeated rollbacks walk back.
    """
    tags = {
        environment_tag(environment, SERVING_IMAGE): image,
        environment_tag(environment, GITOPS_COMMIT): commit,
        environment_tag(environment, CHAMPION_SINCE): now(),
        environment_tag(environment, CHAMPION_REASON): f"{action}: {reason}",
    }
    if action == "promote":
        tags[environment_tag(environment, REPLACED_CHAMPION)] = replaced or NO_CHAMPION
    return tags


def pending_tags(environment: str) -> list[str]:
    """The tags of a promotion waiting for review in ``environment``."""
    return [environment_tag(environment, field) for field in PENDING_FIELDS]


def move_alias(registry: Registry, version: str, environment: str, *, legacy: bool) -> None:
    """Point ``champion-<environment>`` at ``version``; with ``legacy`` (the configured environment),
    retire the plain ``champion`` alias of an older registry, which the new alias now shadows."""
    from refinery.registry.mlflow_registry import LEGACY_CHAMPION

    registry.set_champion(version, environment)
    if legacy:
        # Best effort: the alias is no longer read for this environment; the next write retries.
        with contextlib.suppress(RefineryError):
            registry.remove_alias(LEGACY_CHAMPION)


@dataclass(frozen=True)
class GateRecord(Record):
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

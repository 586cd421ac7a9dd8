"""Promotion, rollback and their failures, on the real registry, Bento store and GitOps repository.

Candidates go through the pipeline's own steps (evaluate, register, package) with the tiny model on
prepared demo data, so every version has real artifacts and a real Bento. After each scenario the loop's
state must be consistent: the champion alias, the overlay at the branch head and the champion's
``dev.gitops_commit`` and Bento tags name the same release, and that Bento is in the store unchanged. The
serving image is a local (podman storage) name here, kept by tag; pinning by digest against a real
registry is tested in tests/cluster.
"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import LABELS, TEST_CONFIG, config_in
from tests.postgres import PostgresServer
from tests.processes import TcpProxy

from refinery.cli import main
from refinery.config import RunConfig
from refinery.errors import PackagingError, PromotionConflict, RefineryError, RegistryError
from refinery.gitops.repo import Release, current_release
from refinery.gitops.repo import promote as commit_release
from refinery.orchestration import steps
from refinery.packaging import store
from refinery.packaging.bento import PackageResult
from refinery.registry.champions import EVALUATED_AGAINST
from refinery.registry.mlflow_registry import CHALLENGER, Registry, champion_alias
from refinery.release.flows import rollback
from refinery.release.promote import promote_version

# The serving image of these promotions: in podman's local storage, so named by tag.
IMAGE = "localhost/refinery:test"
# configs/test.yaml promotes to dev: its alias, and the tags promotion records for it.
CHAMPION = champion_alias("dev")
SERVING_IMAGE, GITOPS_COMMIT = "dev.serving_image", "dev.gitops_commit"
REPLACED, REASON = "dev.replaced_champion", "dev.champion_reason"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, demo_df: pd.DataFrame) -> Path:
    """The demo reviews prepared once (splits, reference profile, prepared.json) for every test here."""
    root = tmp_path_factory.mktemp("prepared")
    cfg = config_in(root, tiny_model_dir, demo_df)
    steps.prepare(cfg, root / "dataset")
    return root / "dataset"


class Loop:
    """One refinement loop's state (registry, Bento store, GitOps repository) and its steps."""

    def __init__(self, root: Path, model: Path, data: Path, extra: tuple[str, ...] = ()) -> None:
        self.overrides = [f"state_dir={root / 'state'}", f"model.base={model}", "gate.min.macro_f1=0", *extra]
        self.cfg: RunConfig = config_in(root, model, extra=self.overrides)
        self.root, self.model, self.data = root, model, data
        self.registry = Registry(self.cfg.registry)

    @property
    def cli(self) -> list[str]:
        return ["-c", str(TEST_CONFIG), *(arg for o in self.overrides for arg in ("--set", o))]

    def candidate(
        self, run: str, *, package: bool = True, model: Path | None = None
    ) -> tuple[str, PackageResult | None]:
        """Evaluate the model (or ``model``) against the current champion, gate it, register it with the
        gate's decision (whatever it is: promotion's refusals are this file's subject) and (by default)
        package it."""
        out = self.root / run
        model = model or self.model
        steps.evaluate(self.cfg, self.data, model, out / "evaluation")
        steps.gate(self.cfg, out / "evaluation", out / "decision", out / "gate.md")
        version = steps.register(
            self.cfg,
            model,
            self.data,
            out / "evaluation",
            run,
            out / "registration",
            decision_dir=out / "decision",
        ).version
        bento = steps.package(self.cfg, version, out / "bento") if package else None
        return version, bento

    def promote(self, version: str, bento: PackageResult | None) -> Any:
        assert bento is not None
        # What the promote component gets from the package step: the release, not the model inside it.
        release = PackageResult(bento.bento_tag, "", bento.bento_uri, bento.bento_sha256)
        return steps.promote(
            self.cfg, version, release, IMAGE, self.root / f"promote-{version}" / "promotion"
        )

    def head(self) -> str:
        git = [
            "git",
            "--git-dir",
            self.cfg.gitops.repository,
            "rev-parse",
            f"refs/heads/{self.cfg.gitops.branch}",
        ]
        return subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()

    def commit_message(self) -> str:
        git = ["git", "--git-dir", self.cfg.gitops.repository, "log", "-1", "--format=%B", self.head()]
        return subprocess.run(git, capture_output=True, text=True, check=True).stdout

    def aliases(self) -> dict[str, tuple[str, ...]]:
        return {v.version: v.aliases for v in self.registry.versions()}

    def assert_consistent(self) -> str:
        """The champion, the overlay at the head, the champion's tags and the Bento store agree;
        returns the champion version."""
        champion = self.registry.champion("dev")
        assert champion is not None
        owners = [v for v, names in self.aliases().items() if CHAMPION in names]
        assert owners == [champion.version]
        release = current_release(self.cfg.gitops)
        bento = PackageResult.from_tags(champion.tags)
        assert bento is not None
        image = champion.tags[SERVING_IMAGE]
        assert release == Release(
            self.registry.name, champion.version, bento.bento_tag, bento.bento_uri, bento.bento_sha256, image
        )
        # The commit that made it champion names it too (a later revert of a failed promotion may sit on top).
        overlay = (
            f"{champion.tags[GITOPS_COMMIT]}:k8s/overlays/{self.cfg.gitops.environment}/kustomization.yaml"
        )
        git = ["git", "--git-dir", self.cfg.gitops.repository, "show", overlay]
        shown = subprocess.run(git, capture_output=True, text=True, check=True).stdout
        assert f"REFINERY_MODEL_VERSION={champion.version}" in shown
        assert store.sha256(bento.bento_uri) == bento.bento_sha256
        return champion.version


@pytest.fixture
def loop(tmp_path: Path, tiny_model_dir: Path, prepared: Path) -> Loop:
    """A loop whose version 1 is champion, promoted through the promote step."""
    state = Loop(tmp_path, tiny_model_dir, prepared)
    state.promote(*state.candidate("run1"))
    return state


def test_first_promotion_commits_then_moves_the_alias_with_its_record(loop: Loop) -> None:
    assert loop.assert_consistent() == "1"
    v1 = loop.registry.get("1")
    assert v1.tags[EVALUATED_AGAINST] == "none" and v1.tags[REPLACED] == "none"
    assert v1.tags[REASON].startswith("promote: gate ")
    assert v1.tags[GITOPS_COMMIT] == loop.head()
    # Only dev's alias and records: no other environment was promoted.
    assert loop.registry.champions() == {"dev": "1"}
    assert not [key for key in v1.tags if key.startswith("prod.")]
    assert "Refinery-Action: promote" in loop.commit_message()
    # What package recorded stays: promotion writes its own tags, not the Bento's again.
    assert v1.tags["bento_model_tag"].startswith(f"{loop.registry.name}:v1-")


def test_a_challenger_judged_against_a_replaced_champion_is_refused(loop: Loop) -> None:
    stale, stale_bento = loop.candidate("run2")  # judged against version 1
    winner, winner_bento = loop.candidate("run3")  # judged against version 1
    loop.promote(winner, winner_bento)
    head = loop.head()

    with pytest.raises(
        PromotionConflict, match=r"the champion is now version 3, but the decision was made against version 1"
    ):
        loop.promote(stale, stale_bento)

    assert loop.assert_consistent() == winner and loop.head() == head
    assert CHAMPION not in loop.aliases()[stale]
    error = (loop.root / f"promote-{stale}" / "error.txt").read_text()
    assert error.startswith("PromotionConflict:")


def test_the_gitops_push_refuses_a_promotion_that_lost_the_race(loop: Loop) -> None:
    """Another run has pushed its release but not yet moved the alias: the overlay check refuses."""
    first, first_bento = loop.candidate("run2")
    second, second_bento = loop.candidate("run3")
    assert first_bento is not None
    other = Release(
        loop.registry.name,
        first,
        first_bento.bento_tag,
        first_bento.bento_uri,
        first_bento.bento_sha256,
        IMAGE,
    )
    commit_release(loop.cfg.gitops, other, expected=("1",))
    head = loop.head()

    with pytest.raises(PromotionConflict, match=r"names version 2 at .*expected version 1 or version 3"):
        loop.promote(second, second_bento)

    assert loop.head() == head
    assert loop.registry.champion("dev").version == "1"  # type: ignore[union-attr]
    # The first run's step finishes (a retry finds its own commit and only moves the alias).
    loop.promote(first, first_bento)
    assert loop.assert_consistent() == first and loop.head() == head


def _promote_in_another_process(
    cfg: RunConfig, version: str, bento: PackageResult, out: str, barrier: Any, results: Any
) -> None:
    """A pipeline's promote step in its own process, started together with the other's."""
    Registry(cfg.registry).versions()  # connect and import before the start line
    barrier.wait(timeout=120)
    try:
        record = steps.promote(cfg, version, bento, IMAGE, Path(out))
        results.put((version, "promoted", record.commit))
    except PromotionConflict as exc:
        results.put((version, "refused", str(exc)))


def test_two_runs_finishing_together_leave_one_champion_with_its_bento_and_commit(loop: Loop) -> None:
    context = multiprocessing.get_context("spawn")
    for round_number in range(3):
        champion = loop.assert_consistent()
        candidates = [loop.candidate(f"round{round_number}-{side}") for side in ("a", "b")]
        barrier, results = context.Barrier(2), context.Queue()
        processes = [
            context.Process(
                target=_promote_in_another_process,
                args=(loop.cfg, version, bento, str(loop.root / f"race-{version}"), barrier, results),
            )
            for version, bento in candidates
        ]
        for process in processes:
            process.start()
        outcomes = sorted(results.get(timeout=300) for _ in processes)
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0

        promoted = [o for o in outcomes if o[1] == "promoted"]
        refused = [o for o in outcomes if o[1] == "refused"]
        assert len(promoted) == 1 and len(refused) == 1, outcomes
        assert loop.assert_consistent() == promoted[0][0]
        assert loop.head() == promoted[0][2] == loop.registry.get(promoted[0][0]).tags[GITOPS_COMMIT]
        assert f"version {champion}" in refused[0][2]
        assert CHAMPION not in loop.aliases()[refused[0][0]]


def test_rollback_restores_the_previous_champion_with_a_gitops_commit(
    loop: Loop, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, bad_bento = loop.candidate("run2")
    loop.promote(bad, bad_bento)
    before = loop.head()

    assert main(["models", "rollback", *loop.cli, "--reason", "p95 latency doubled"]) == 0

    assert "rolled back to review-sentiment-test version 1" in capsys.readouterr().out
    assert loop.assert_consistent() == "1"
    assert loop.head() != before
    message = loop.commit_message()
    assert message.startswith("rollback review-sentiment-test v1 in dev")
    assert "Refinery-Reason: from version 2: p95 latency doubled" in message
    v1 = loop.registry.get("1")
    assert v1.tags[REASON] == "rollback: from version 2: p95 latency doubled"
    assert v1.tags[GITOPS_COMMIT] == loop.head()
    # Version 1 replaced no earlier champion: rolling back further needs an explicit target.
    assert main(["models", "rollback", *loop.cli]) == 2
    assert "replaced no earlier champion in dev; name the version to go back to with --to" in (
        capsys.readouterr().err
    )
    # And forward again, by name.
    assert main(["models", "rollback", *loop.cli, "--to", bad]) == 0
    assert loop.assert_consistent() == bad


def test_rollback_to_a_version_never_served_is_refused_and_nothing_moves(loop: Loop) -> None:
    unpackaged, _ = loop.candidate("run2", package=False)
    head = loop.head()
    with pytest.raises(
        RefineryError, match=f"version {unpackaged} of review-sentiment-test was never packaged"
    ):
        rollback(loop.cfg, unpackaged)
    assert loop.head() == head and loop.assert_consistent() == "1"


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory, demo_df: pd.DataFrame) -> Path:
    """Another tiny model (another seed): a challenger that is not a copy of the champion."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("other-model"), list(demo_df["text"]), LABELS, seed=1)


# The gate's comparisons are another file's subject: here only its verdict's consequences matter.
LENIENT = [
    "--set",
    "gate.significance.mode=off",
    "--set",
    "gate.max_regression.macro_f1=1",
    "--set",
    "gate.slices.enabled=false",
]


def test_manual_promotion_goes_through_the_gate_and_packages_when_needed(
    loop: Loop, capsys: pytest.CaptureFixture[str], other_model: Path
) -> None:
    version, _ = loop.candidate("run2", package=False, model=other_model)

    assert main(["models", "promote", *loop.cli, *LENIENT, version]) == 0

    out = capsys.readouterr().out
    assert "gate: PASSED" in out and f"promoted review-sentiment-test version {version}" in out
    assert loop.assert_consistent() == version
    info = loop.registry.get(version)
    assert info.tags[REPLACED] == "1"
    assert info.tags[REASON] == "promote: by refinery models promote, gate passed"
    # The gate's new decision is the version's gate record, which promotion to prod reads.
    assert info.tags["gate"].startswith("passed: ")
    assert info.tags["gate_by"].startswith("refinery models promote in dev against version 1, ")


def test_manual_promotion_rejected_by_the_gate_moves_nothing_unless_forced_with_a_reason(
    loop: Loop, capsys: pytest.CaptureFixture[str], other_model: Path
) -> None:
    version, _ = loop.candidate("run2", model=other_model)
    strict = [*loop.cli, *LENIENT, "--set", "gate.min.macro_f1=0.999"]
    head = loop.head()

    assert main(["models", "promote", *strict, version]) == 1
    out = capsys.readouterr().out
    assert "gate: REJECTED" in out and "[FAIL] min.macro_f1" in out and "not promoted" in out
    assert loop.head() == head and loop.assert_consistent() == "1"

    assert main(["models", "promote", *strict, version, "--force"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert loop.head() == head

    assert main(["models", "promote", *strict, version, "--force", "--reason", "hotfix for ticket 42"]) == 0
    assert loop.assert_consistent() == version
    reason = "promote: by refinery models promote, forced: hotfix for ticket 42 (gate rejected)"
    assert loop.registry.get(version).tags[REASON] == reason
    assert loop.registry.get(version).tags["gate"].startswith("rejected: ")
    assert "Refinery-Reason: by refinery models promote, forced: hotfix for ticket 42 (gate rejected)" in (
        loop.commit_message()
    )


def _model_files(loop: Loop, version: str) -> Path:
    run_id = loop.registry.get(version).run_id
    root = Path(loop.cfg.registry.artifact_location)
    [folder] = [
        p for p in root.rglob("model") if p.parent.name == "artifacts" and p.parent.parent.name == run_id
    ]
    return folder


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_champion_with_missing_or_corrupt_artifacts_fails_evaluation_naming_it(
    loop: Loop, damage: str
) -> None:
    folder = _model_files(loop, "1")
    if damage == "missing":
        for path in folder.iterdir():
            path.unlink()
        expected = "version 1 of review-sentiment-test has no model/ artifacts"
    else:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        expected = "champion version 1"
    aliases, head = loop.aliases(), loop.head()

    with pytest.raises(RegistryError, match=expected):
        steps.evaluate(loop.cfg, loop.data, loop.model, loop.root / "run2" / "evaluation")

    error = (loop.root / "run2" / "error.txt").read_text()
    assert error.startswith("RegistryError:") and expected in error
    assert loop.aliases() == aliases and loop.head() == head


@pytest.fixture
def postgres_loop(
    tmp_path: Path, tiny_model_dir: Path, prepared: Path, postgres_server: PostgresServer
) -> Iterator[tuple[Loop, TcpProxy]]:
    """A loop on PostgreSQL reached through a proxy the test can cut; version 1 is champion."""
    database = postgres_server.create_database("promotion")
    with TcpProxy(postgres_server.port) as proxy:
        url = postgres_server.url(database).replace(f":{postgres_server.port}/", f":{proxy.port}/")
        state = Loop(tmp_path, tiny_model_dir, prepared, (f"registry.tracking_uri={url}",))
        state.promote(*state.candidate("run1"))
        yield state, proxy
    postgres_server.drop_database(database)


def test_an_unreachable_registry_fails_each_step_naming_it_and_no_alias_moves(
    postgres_loop: tuple[Loop, TcpProxy],
) -> None:
    loop, proxy = postgres_loop
    version, bento = loop.candidate("run2")
    aliases, head = loop.aliases(), loop.head()
    where = re.escape(f"registry unreachable at postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/")

    proxy.cut()
    with pytest.raises(RegistryError, match=where):
        steps.evaluate(loop.cfg, loop.data, loop.model, loop.root / "run3" / "evaluation")
    with pytest.raises(RegistryError, match=where):
        loop.promote(version, bento)
    proxy.restore()

    assert loop.aliases() == aliases and loop.head() == head
    assert re.match("RegistryError: " + where, (loop.root / f"promote-{version}" / "error.txt").read_text())


def test_a_registry_lost_after_the_push_gets_the_commit_reverted(
    postgres_loop: tuple[Loop, TcpProxy],
) -> None:
    loop, proxy = postgres_loop
    version, bento = loop.candidate("run2")
    assert bento is not None
    head = loop.head()

    class CutAfterPush(Registry):
        """The real registry, whose connection goes down just as the alias is about to move."""

        def tag(self, version: str, tags: dict[str, str]) -> None:
            proxy.cut()
            super().tag(version, tags)

    with pytest.raises(
        RegistryError, match=r"registry unreachable.*the GitOps commit [0-9a-f]{12} was reverted"
    ):
        promote_version(
            loop.cfg,
            version,
            bento,
            image=IMAGE,
            expected_champion="1",
            registry=CutAfterPush(loop.cfg.registry),
        )
    proxy.restore()

    assert loop.assert_consistent() == "1"
    message = subprocess.run(
        ["git", "--git-dir", loop.cfg.gitops.repository, "log", "--format=%s", f"{head}..{loop.head()}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert message == [
        f'revert "promote review-sentiment-test v{version} to dev (bento {bento.bento_tag})"',
        f"promote review-sentiment-test v{version} to dev (bento {bento.bento_tag})",
    ]
    assert loop.aliases()[version] == (CHALLENGER,)


# ------------------------------------------------------------- retried steps: no duplicate, no half state


def test_a_retried_register_step_returns_the_version_its_run_registered(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    out = loop.root / "run2"
    steps.evaluate(loop.cfg, loop.data, loop.model, out / "evaluation")
    # The first attempt dies after logging the run's artifacts, before the version exists.
    real = MlflowClient.create_model_version

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RegistryError("the pod was evicted")

    monkeypatch.setattr(MlflowClient, "create_model_version", crash)
    with pytest.raises(RegistryError, match="evicted"):
        steps.register(loop.cfg, loop.model, loop.data, out / "evaluation", "run2", out / "registration")
    monkeypatch.setattr(MlflowClient, "create_model_version", real)
    assert [v.version for v in loop.registry.versions()] == ["1"]

    first = steps.register(loop.cfg, loop.model, loop.data, out / "evaluation", "run2", out / "registration")
    # A second retry after the version was made (the step died before reporting it): the same version.
    again = steps.register(loop.cfg, loop.model, loop.data, out / "evaluation", "run2", out / "registration")
    assert first.version == again.version == "2"
    assert [v.version for v in loop.registry.versions()] == ["1", "2"]
    assert loop.aliases()["2"] == (CHALLENGER,)
    assert not (loop.root / "run2" / "error.txt").exists(), "the successful attempt clears the earlier error"


def test_a_retried_package_step_reuses_the_bento_it_stored_and_tags_it_once(loop: Loop) -> None:
    from refinery.packaging.bento import package

    version, _ = loop.candidate("run2", package=False)
    # The first attempt died after storing the Bento, before tagging the version with it.
    model_dir = loop.registry.download(version, "model", loop.root / "downloaded")
    stored = package(loop.cfg, model_dir, version)
    assert PackageResult.from_tags(loop.registry.get(version).tags) is None

    retried = steps.package(loop.cfg, version, loop.root / "run2" / "bento")
    assert retried.reused and retried.bento_uri == stored.bento_uri
    assert PackageResult.from_tags(loop.registry.get(version).tags) == PackageResult(
        **{**retried.to_dict(), "reused": False}
    )
    again = steps.package(loop.cfg, version, loop.root / "run2" / "bento")
    assert (again.bento_tag, again.bento_sha256) == (stored.bento_tag, stored.bento_sha256)
    store_root = Path(loop.cfg.packaging.bento_store or "")
    assert len(list(store_root.rglob(f"v{version}-*.bento"))) == 1
    # The stored file no longer matches the recorded SHA-256 (another attempt's export replaced it):
    # packaging again records what the store holds, instead of the stale tags promote would refuse.
    loop.registry.tag(version, {"bento_sha256": "0" * 64})
    with pytest.raises(PackagingError, match="differs from what was packaged"):
        loop.promote(version, PackageResult.from_tags(loop.registry.get(version).tags))
    mended = steps.package(loop.cfg, version, loop.root / "run2" / "bento")
    assert mended.bento_sha256 == stored.bento_sha256 == loop.registry.get(version).tags["bento_sha256"]
    loop.promote(version, mended)
    assert loop.assert_consistent() == version


def test_manual_promotion_of_a_copy_is_refused_as_no_change(
    loop: Loop, capsys: pytest.CaptureFixture[str]
) -> None:
    version, _ = loop.candidate("run2", package=False)  # the champion's own weights again
    head = loop.head()
    assert main(["models", "promote", *loop.cli, *LENIENT, version]) == 1
    out = capsys.readouterr().out
    assert "gate: NO CHANGE" in out and "weights hash the same as champion v1's" in out
    assert loop.head() == head and loop.assert_consistent() == "1"

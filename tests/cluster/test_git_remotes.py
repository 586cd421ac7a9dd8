"""GitOps promotion to a real remote over ssh (key-only sshd) and over http with a token
(git-http-backend behind Basic authentication), with the credentials in the environment only, as a
Kubernetes Secret puts them there (refinery.credentials)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cluster_services import GitServer

from refinery.config import GitOpsConfig
from refinery.errors import GitOpsError
from refinery.gitops.repo import Release, current_release, promote

REPO_ROOT = Path(__file__).resolve().parents[2]
V1 = Release(
    "review-sentiment",
    "1",
    "review-sentiment-service:v1-abc",
    "s3://bentos/review-sentiment-service/v1-abc.bento",
    hashlib.sha256(b"bento").hexdigest(),
    "registry.test/ml/refinery@sha256:" + hashlib.sha256(b"image").hexdigest(),
)
CREDENTIALS = (
    "REFINERY_GIT_TOKEN",
    "REFINERY_GIT_USERNAME",
    "REFINERY_GIT_SSH_KEY",
    "REFINERY_GIT_KNOWN_HOSTS",
)


@pytest.fixture
def remote(git_server: GitServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitServer]:
    """The seeded GitOps repository on the git server; no git credentials in the environment yet."""
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    git_server.create_repo("gitops", seed_dir=REPO_ROOT / "k8s", prefix="k8s")
    yield git_server


def _config(url: str) -> GitOpsConfig:
    return GitOpsConfig(repository=url, author_name="refinery-bot", author_email="bot@refinery.test")


def test_promotion_over_ssh_with_a_key_from_the_environment(
    remote: GitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFINERY_GIT_SSH_KEY", remote.private_key)
    monkeypatch.setenv("REFINERY_GIT_KNOWN_HOSTS", remote.known_hosts)
    cfg = _config(remote.ssh_url("gitops"))

    result = promote(cfg, V1)

    assert result.changed and remote.log("gitops")[0].startswith("promote review-sentiment v1 to dev")
    assert current_release(cfg) == V1
    assert "REFINERY_MODEL_VERSION=1" in remote.show("gitops", "k8s/overlays/dev/kustomization.yaml")


def test_ssh_refuses_a_host_it_was_not_told_to_trust(
    remote: GitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = remote.known_hosts.split()
    other[-1] = "AAAAC3NzaC1lZDI1NTE5AAAAIDtm0P7dG6RGOSYBqK0E0mCbEfTQ3eKnJ0t2ZrJ1Q4ZP"  # another host's key
    monkeypatch.setenv("REFINERY_GIT_SSH_KEY", remote.private_key)
    monkeypatch.setenv("REFINERY_GIT_KNOWN_HOSTS", " ".join(other))
    with pytest.raises(GitOpsError, match=r"(?s)is not reachable.*Host key verification failed"):
        promote(_config(remote.ssh_url("gitops")), V1)
    assert remote.log("gitops") == ["Seed"]


def test_a_revoked_ssh_key_fails_naming_the_repository(
    remote: GitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFINERY_GIT_SSH_KEY", remote.private_key)
    monkeypatch.setenv("REFINERY_GIT_KNOWN_HOSTS", remote.known_hosts)
    remote.reject_credentials()
    url = remote.ssh_url("gitops")
    # The user part of a URL is masked in messages (in an https URL it may be a token).
    shown = re.escape(re.sub(r"//[^@/]+@", "//***@", url))
    with pytest.raises(
        GitOpsError, match=rf"(?s)GitOps repository {shown} is not reachable.*Permission denied"
    ):
        promote(_config(url), V1)
    assert remote.log("gitops") == ["Seed"]


def test_promotion_over_http_with_a_token_that_never_shows(
    remote: GitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = remote.http_url("gitops")
    cfg = _config(url)
    # No token: git does not ask on a terminal, it fails naming the repository.
    with pytest.raises(GitOpsError, match=rf"GitOps repository {url} is not reachable"):
        promote(cfg, V1)

    monkeypatch.setenv("REFINERY_GIT_USERNAME", remote.username)
    monkeypatch.setenv("REFINERY_GIT_TOKEN", remote.token)
    promote(cfg, V1)
    assert current_release(cfg) == V1
    assert [status for _, _, status in remote.access_log].count(200) >= 3

    remote.reject_credentials()
    with pytest.raises(GitOpsError, match="Authentication failed") as refused:
        promote(cfg, V1)
    assert remote.token not in str(refused.value)
    assert remote.log("gitops")[1:] == ["Seed"]


def test_a_credential_helper_of_the_users_own_never_keeps_the_token(
    remote: GitServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kept = tmp_path / "git-credentials"
    user_config = tmp_path / "gitconfig"
    user_config.write_text(f"[credential]\n\thelper = store --file {kept}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(user_config))
    monkeypatch.setenv("REFINERY_GIT_USERNAME", remote.username)
    monkeypatch.setenv("REFINERY_GIT_TOKEN", remote.token)

    promote(_config(remote.http_url("gitops")), V1)

    assert remote.log("gitops")[0].startswith("promote review-sentiment v1 to dev")
    assert not kept.exists()

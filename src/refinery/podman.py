"""How refinery runs podman: with the repository's containers.conf unless the caller chose another.

Debian 12's podman 4.3 needs runc, cgroupfs, file events and raised ulimits on this kind of machine
(containers/containers.conf says why); every podman call refinery makes goes through :func:`podman_env`.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository's podman settings; absent in an installed wheel, where the system's apply.
CONTAINERS_CONF = Path(__file__).resolve().parents[2] / "containers" / "containers.conf"


def podman_env() -> dict[str, str]:
    """This process's environment plus ``CONTAINERS_CONF`` pointing at the repository's file, if unset."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and CONTAINERS_CONF.is_file():
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env

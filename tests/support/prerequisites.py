"""Skipping for a missing prerequisite, unless CI says it must be there.

``.ci/run`` sets RUNMESH_REQUIRE_E2E=1: on the CI machine every
prerequisite is installed, so a skip there would hide a broken install and
count as a pass. With the variable set, a missing prerequisite fails.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("RUNMESH_REQUIRE_E2E") == "1":
        pytest.fail(f"required for this run but missing: {reason}")
    pytest.skip(reason)


def require_root_namespaces() -> None:
    require(os.geteuid() == 0, "needs root to create network namespaces")
    require(shutil.which("ip") is not None, "iproute2 (`ip`) is not installed")
    require(shutil.which("wireguard-go") is not None, "wireguard-go is not installed")
    require(shutil.which("wg") is not None, "wireguard-tools (`wg`) is not installed")

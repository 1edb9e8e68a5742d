"""A lab of namespaces with a coordinator and gateway the nodes can reach."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.netlab import Lab
from support.prerequisites import require_root_namespaces
from support.processes import Coordinator, Service, start_coordinator, start_gateway


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root_namespaces()
    lab = Lab()
    try:
        lab.build(3, tmp_path)
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab_coordinator(lab: Lab, tmp_path: Path) -> Iterator[Coordinator]:
    # Listens on the root end of the lab's bridge so the nodes can reach it.
    # Plaintext is fine on the lab's own bridge; off loopback it must be
    # asked for explicitly.
    service = start_coordinator(tmp_path, host=lab.root_address, extra=["--insecure"])
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def lab_gateway(tmp_path: Path, lab_coordinator: Coordinator) -> Iterator[Service]:
    service = start_gateway(tmp_path, lab_coordinator.target)
    try:
        yield service
    finally:
        service.stop()

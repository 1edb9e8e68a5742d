"""Fixtures shared by every part of the suite: real processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import (
    Coordinator,
    Service,
    create_key,
    start_coordinator,
    start_gateway,
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # One event loop for the whole run: grpc.aio ties its completion queue
    # to the loop it first ran on, and a later test's loop then receives
    # callbacks meant for a closed one ("Event loop is closed").
    return "asyncio"


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    service = start_coordinator(tmp_path)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def admin_key(coordinator: Coordinator) -> str:
    return create_key(coordinator.db_url)


@pytest.fixture
def gateway(tmp_path: Path, coordinator: Coordinator) -> Iterator[Service]:
    service = start_gateway(tmp_path, coordinator.target)
    try:
        yield service
    finally:
        service.stop()

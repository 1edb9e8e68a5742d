"""A Database counts the units of work handed to its threads, so a feed can
tell whether more changes are on their way (hub.Coalescing.plan)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from coordinator.db import open_database

pytestmark = pytest.mark.anyio


async def test_in_flight_counts_work_until_it_returns(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    release = threading.Event()
    try:
        assert database.in_flight == 0
        blocked = asyncio.ensure_future(database.run(release.wait))
        queued = asyncio.ensure_future(database.run(lambda: None))
        await asyncio.sleep(0.05)
        assert database.in_flight == 2
        release.set()
        await asyncio.gather(blocked, queued)
        assert database.in_flight == 0
    finally:
        release.set()
        await database.close()


async def test_in_flight_falls_back_when_the_work_fails(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'x.db'}")

    def fail() -> None:
        raise RuntimeError("refused")

    try:
        with pytest.raises(RuntimeError):
            await database.run(fail)
        assert database.in_flight == 0
    finally:
        await database.close()

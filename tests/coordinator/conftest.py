"""Fixtures for the coordinator's domain tests: a real, migrated SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from domain_db import open_database
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db import session_factory


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await open_database(tmp_path / "coordinator.db")
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()

"""Fixtures for the coordinator's domain tests: a real, migrated SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from domain_db import open_database

from coordinator.store import Database


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "coordinator.db")
    try:
        yield database
    finally:
        await database.close()

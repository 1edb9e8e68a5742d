"""Schema migrations (Alembic), run on a thread from async code.

The coordinator upgrades an SQLite database to the newest revision when it
starts: an embedded database has no operator to run a separate step. For
PostgreSQL, replicas start only on a current schema and an operator runs
``runmesh-coordinator migrate`` once per upgrade, so two replicas never
race to migrate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


Progress = Callable[..., None]


async def upgrade(
    engine: Engine, revision: str = "head", progress: Progress | None = None
) -> None:
    await _run(engine, lambda cfg: command.upgrade(cfg, revision), progress)


async def downgrade(
    engine: Engine, revision: str, progress: Progress | None = None
) -> None:
    await _run(engine, lambda cfg: command.downgrade(cfg, revision), progress)


async def current_revision(engine: Engine) -> str | None:
    def read(sync_conn: Any) -> str | None:
        rev: str | None = MigrationContext.configure(sync_conn).get_current_revision()
        return rev

    def in_thread() -> str | None:
        with engine.connect() as conn:
            return read(conn)

    return await asyncio.to_thread(in_thread)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def is_current(engine: Engine) -> bool:
    return await current_revision(engine) == head_revision()


async def _run(engine: Engine, step: Any, progress: Progress | None = None) -> None:
    def in_sync(sync_conn: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        config.attributes["progress"] = progress
        step(config)

    def in_thread() -> None:
        with engine.begin() as conn:
            in_sync(conn)

    # Alembic is synchronous and must not run on the event loop.
    await asyncio.to_thread(in_thread)

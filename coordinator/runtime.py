"""What one running coordinator process holds: database, hub, key, settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from coordinator import db, nodeauth, schema
from coordinator.hub import Hub
from coordinator.paging import Cursors
from coordinator.ratelimit import FailureLimiter
from coordinator.settings import Settings
from coordinator.store import in_transaction


@dataclass
class Runtime:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    hub: Hub
    identity: nodeauth.CoordinatorIdentity
    settings: Settings
    cursors: Cursors
    limiter: FailureLimiter

    async def close(self) -> None:
        await self.hub.close()
        await self.engine.dispose()


async def open_runtime(db_url: str, settings: Settings, migrate: bool) -> Runtime:
    engine = db.create_engine(db_url)
    if migrate:
        await schema.upgrade(engine)
    elif not await schema.is_current(engine):
        await engine.dispose()
        raise RuntimeError(
            "the database schema is not current; run `runmesh-coordinator migrate`"
        )
    sessions = db.session_factory(engine)
    identity = await in_transaction(sessions, nodeauth.load_or_create_identity)
    return Runtime(
        engine=engine,
        sessions=sessions,
        hub=Hub(sessions),
        identity=identity,
        settings=settings,
        cursors=Cursors(bytes(identity.private_key)),
        limiter=FailureLimiter(),
    )

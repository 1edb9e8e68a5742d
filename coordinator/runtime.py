"""What one running coordinator process holds: database, hub, key, settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from coordinator import db, nodeauth, schema
from coordinator.gate import SetupGate
from coordinator.hub import Hub
from coordinator.paging import Cursors
from coordinator.presence import Presence
from coordinator.ratelimit import FailureLimiter
from coordinator.settings import Settings
from coordinator.store import in_transaction, serialise_writes
from coordinator.sync import StreamDeps


@dataclass
class Runtime:
    engines: tuple[AsyncEngine, ...]
    # Sessions for units of work that write (BEGIN IMMEDIATE on SQLite)...
    sessions: async_sessionmaker[AsyncSession]
    # ...and for reads, which on SQLite never queue behind writers.
    readers: async_sessionmaker[AsyncSession]
    hub: Hub
    presence: Presence
    identity: nodeauth.CoordinatorIdentity
    settings: Settings
    cursors: Cursors
    limiter: FailureLimiter
    streams: StreamDeps

    async def close(self) -> None:
        await self.presence.close()
        await self.hub.close()
        for engine in self.engines:
            await engine.dispose()


async def open_runtime(db_url: str, settings: Settings, migrate: bool) -> Runtime:
    writer = db.create_engine(db_url)
    if migrate:
        await schema.upgrade(writer)
    elif not await schema.is_current(writer):
        await writer.dispose()
        raise RuntimeError(
            "the database schema is not current; run `runmesh-coordinator migrate`"
        )
    reader = (
        db.create_engine(db_url, for_writes=False)
        if db.is_sqlite(db.async_url(db_url))
        else writer
    )
    sessions = db.session_factory(writer)
    readers = db.session_factory(reader)
    if db.is_sqlite(db.async_url(db_url)):
        serialise_writes(sessions)
    identity = await in_transaction(sessions, nodeauth.load_or_create_identity)
    hub = Hub(readers, settings.coalescing, queue_limit=settings.stream_queue_limit)
    presence = Presence(sessions, hub, settings.presence)
    await presence.start()
    streams = StreamDeps(
        readers=readers,
        writers=sessions,
        hub=hub,
        presence=presence,
        identity=identity,
        settings=settings,
        gate=SetupGate(settings.setup_concurrency),
    )
    return Runtime(
        engines=(writer, reader) if reader is not writer else (writer,),
        sessions=sessions,
        readers=readers,
        hub=hub,
        presence=presence,
        identity=identity,
        settings=settings,
        cursors=Cursors(bytes(identity.private_key)),
        limiter=FailureLimiter(settings.limits),
        streams=streams,
    )

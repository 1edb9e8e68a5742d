"""What one running coordinator process holds: database, hub, key, settings."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator import changelog, db, nodeauth, schema
from coordinator.approvals import ApprovalQueue
from coordinator.gate import SetupGate
from coordinator.hub import Hub
from coordinator.keepalive import KeepaliveClock
from coordinator.paging import Cursors
from coordinator.presence import Presence
from coordinator.ratelimit import FailureLimiter
from coordinator.settings import Settings
from coordinator.store import Database, in_transaction
from coordinator.sync import StreamDeps


@dataclass
class Runtime:
    # Units of work that write (BEGIN IMMEDIATE on SQLite)...
    sessions: Database
    # ...and reads, which on SQLite never queue behind writers.
    readers: Database
    hub: Hub
    approvals: ApprovalQueue
    presence: Presence
    identity: nodeauth.CoordinatorIdentity
    settings: Settings
    cursors: Cursors
    limiter: FailureLimiter
    streams: StreamDeps

    async def close(self) -> None:
        await self.approvals.close()
        await self.presence.close()
        await self.streams.keepalives.close()
        await self.hub.close()
        await self.sessions.close()
        await self.readers.close()


async def open_runtime(db_url: str, settings: Settings, migrate: bool) -> Runtime:
    sessions = db.open_database(db_url)
    try:
        if migrate:
            await schema.upgrade(sessions.engine)
        elif not await schema.is_current(sessions.engine):
            raise RuntimeError(
                "the database schema is not current; run `runmesh-coordinator migrate`"
            )
    except BaseException:
        await sessions.close()
        raise
    readers = db.open_database(db_url, for_writes=False)
    identity = await in_transaction(sessions, nodeauth.load_or_create_identity)
    recent = changelog.RecentCommits()
    changelog.remember_commits(sessions.sessions, recent)
    hub = Hub(
        readers,
        settings.coalescing,
        queue_limit=settings.stream_queue_limit,
        recent=recent,
        writers=sessions,
    )
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
        keepalives=KeepaliveClock(settings.keepalive_interval),
    )
    return Runtime(
        sessions=sessions,
        readers=readers,
        hub=hub,
        approvals=ApprovalQueue(sessions, settings, hub.notify),
        presence=presence,
        identity=identity,
        settings=settings,
        cursors=Cursors(bytes(identity.private_key)),
        limiter=FailureLimiter(settings.limits),
        streams=streams,
    )

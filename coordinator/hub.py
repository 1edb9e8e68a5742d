"""The open Sync streams of this process and the fan-out that feeds them.

Each org with at least one open stream has a feed: a task that reads the
change log after every wake-up and hands one ``Broadcast`` — built and
serialised once — to every subscriber of the org. Subscribers have bounded
queues; a subscriber that falls behind loses its queued deltas and is sent
one fresh full map instead, so a slow consumer costs only itself.

Fan-out is driven from the log, not from the code that made the change: a
wake-up says only "look at the log", so a change committed by another
process is delivered the same way once that process's wake-up reaches us.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator import changelog, peermap
from coordinator.changelog import Change, ChangeOp
from coordinator.models import Org
from runmesh.v1 import mesh_pb2

log = logging.getLogger(__name__)

QUEUE_LIMIT = 64
LOG_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Broadcast:
    """Changes (from_version, to_version] of one org, encoded once."""

    from_version: int
    to_version: int
    changes: tuple[Change, ...]
    encoded: bytes


@dataclass(frozen=True)
class Revocation:
    reason: str


class FullMapNeeded:
    """Queued in place of deltas a subscriber could not keep up with."""


QueueItem = Broadcast | Revocation | FullMapNeeded


@dataclass(eq=False)
class Subscriber:
    stream_id: int
    org_id: str
    node_id: str
    public_key: str
    # The version of the last map or delta written to this stream.
    version: int = 0
    queue: asyncio.Queue[QueueItem] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )

    def offer(self, item: QueueItem) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._reset_to_full_map()

    def _reset_to_full_map(self) -> None:
        revoked = False
        while not self.queue.empty():
            revoked |= isinstance(self.queue.get_nowait(), Revocation)
        log.warning(
            "slow consumer reset to a full map org_id=%s node_id=%s",
            self.org_id,
            self.node_id,
        )
        self.queue.put_nowait(FullMapNeeded())
        if revoked:
            self.queue.put_nowait(Revocation("node revoked"))


def encode_delta(from_version: int, changes: tuple[Change, ...]) -> bytes:
    delta = peermap.compose_delta(from_version, changes)
    return mesh_pb2.CoordinatorMessage(delta=delta).SerializeToString()


class OrgFeed:
    def __init__(
        self,
        org_id: str,
        version: int,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.org_id = org_id
        self.version = version
        self.subscribers: dict[int, Subscriber] = {}
        self._sessions = sessions
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"feed-{org_id}")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            # A wake-up from this process delivers at once; the timeout makes
            # the feed look at the log anyway, so a change committed by
            # another process (the operator's CLI, another replica) is
            # delivered within LOG_POLL_SECONDS.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LOG_POLL_SECONDS)
            self._wake.clear()
            try:
                await self._deliver_new_changes()
            except Exception:
                # The log is still there; the next wake-up retries from
                # self.version, so nothing is lost by giving up on this one.
                log.exception("fan-out failed org_id=%s", self.org_id)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _deliver_new_changes(self) -> None:
        async with self._sessions() as session:
            changes = tuple(
                await changelog.changes_since(session, self.org_id, self.version)
            )
        if not changes:
            return
        broadcast = Broadcast(
            from_version=self.version,
            to_version=changes[-1].version,
            changes=changes,
            encoded=encode_delta(self.version, changes),
        )
        self.version = broadcast.to_version
        removed = {c.node_id for c in changes if c.op == ChangeOp.REMOVE}
        for subscriber in list(self.subscribers.values()):
            subscriber.offer(broadcast)
            if subscriber.node_id in removed:
                subscriber.offer(Revocation("node revoked"))


class Hub:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._feeds: dict[str, OrgFeed] = {}
        self._ids = itertools.count(1)
        # node_id -> stream_id of the stream that owns the node's presence.
        # A stream that ends after the node reconnected elsewhere must not
        # mark it offline.
        self._presence: dict[str, int] = {}

    async def subscribe(self, org_id: str, node_id: str, public_key: str) -> Subscriber:
        if org_id not in self._feeds:
            version = await self._current_version(org_id)
            # Another stream of the org may have made the feed meanwhile.
            if org_id not in self._feeds:
                self._feeds[org_id] = OrgFeed(org_id, version, self._sessions)
        feed = self._feeds[org_id]
        subscriber = Subscriber(next(self._ids), org_id, node_id, public_key)
        feed.subscribers[subscriber.stream_id] = subscriber
        self._presence[node_id] = subscriber.stream_id
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> bool:
        """Forget a stream; True if it still owned its node's presence."""
        feed = self._feeds.get(subscriber.org_id)
        if feed is not None:
            feed.subscribers.pop(subscriber.stream_id, None)
        owned = self._presence.get(subscriber.node_id) == subscriber.stream_id
        if owned:
            del self._presence[subscriber.node_id]
        return owned

    def is_present(self, node_id: str) -> bool:
        return node_id in self._presence

    def notify(self, org_id: str) -> None:
        """Something was committed to ``org_id``'s change log."""
        feed = self._feeds.get(org_id)
        if feed is not None:
            feed.wake()

    def stream_count(self) -> int:
        return sum(len(f.subscribers) for f in self._feeds.values())

    async def close(self) -> None:
        for feed in self._feeds.values():
            await feed.close()
        self._feeds.clear()

    async def _current_version(self, org_id: str) -> int:
        async with self._sessions() as session:
            version = await session.scalar(
                select(Org.mesh_version).where(Org.id == org_id)
            )
        return int(version or 0)

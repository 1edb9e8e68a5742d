"""Who is online: stream ownership, the offline grace, batched writes.

A node is online while at least one of its streams is open. Each stream
holds a claim; the node goes towards offline only when its last claim is
released, so a late-ending old stream can never mark a node offline that
has already reconnected on a newer stream, and a second stream of the same
node (a duplicate process, a half-dead connection) cannot either.

When the node's last stream ends, the node is not reported offline at
once: a timer runs for ``grace`` seconds and a reconnect before it fires
cancels it, so a node that blips (a Wi-Fi roam, a replica shutting down)
is never reported offline at all.

Several replicas, or a replica that crashed, cannot rely on timers alone:
the process that would have fired them may be gone. So every replica
refreshes ``last_seen_at`` of the nodes it holds every ``heartbeat``
seconds, and reaps nodes the database calls online whose ``last_seen_at``
is older than three heartbeats and that it does not hold itself: their
replica is gone and they did not come back.

Presence changes are peer-map changes (a peer's ``online`` flag and its
endpoints), so they go through the change log like any other. They are
written in batches, one transaction every ``flush_interval``: a storm of
thousands of reconnects costs a few transactions, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from coordinator import accounts, activity, changelog
from coordinator.changes import ChangeOp
from coordinator.hub import Hub
from coordinator.ids import utcnow
from coordinator.models import Node
from coordinator.store import Database, in_transaction

log = logging.getLogger(__name__)

# Ids per IN (...) query, well under SQLite's limit on bound parameters.
QUERY_CHUNK = 500


@dataclass(frozen=True)
class PresenceTiming:
    grace: float = 10.0
    heartbeat: float = 30.0
    flush_interval: float = 0.05

    @property
    def stale_after(self) -> float:
        return 3 * self.heartbeat


@dataclass(frozen=True)
class Update:
    org_id: str
    online: bool
    endpoints: tuple[str, ...] = ()
    listen_port: int = 0


class Presence:
    def __init__(
        self,
        writers: Database,
        hub: Hub,
        timing: PresenceTiming | None = None,
    ) -> None:
        self._writers = writers
        self._hub = hub
        self._timing = timing or PresenceTiming()
        # node_id -> the open streams of the node, oldest first.
        self._claims: dict[str, list[int]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pending: dict[str, Update] = {}
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_forever(), name="presence-flush"),
            asyncio.create_task(self._heartbeat_forever(), name="presence-heartbeat"),
        ]

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def heartbeat(self) -> None:
        """Refresh the nodes this process holds; reap the ones nobody does."""
        held = list(self._claims)
        now = utcnow()
        stale_before = now - dt.timedelta(seconds=self._timing.stale_after)

        def work(session: Session) -> list[tuple[str, str]]:
            for start in range(0, len(held), QUERY_CHUNK):
                session.execute(
                    update(Node)
                    .where(Node.id.in_(held[start : start + QUERY_CHUNK]))
                    .values(last_seen_at=now)
                )
            rows = session.execute(
                select(Node.id, Node.org_id).where(
                    Node.online.is_(True),
                    Node.revoked_at.is_(None),
                    or_(Node.last_seen_at.is_(None), Node.last_seen_at < stale_before),
                )
            )
            return [(node_id, org_id) for node_id, org_id in rows.all()]

        for node_id, org_id in await in_transaction(self._writers, work):
            if node_id not in self._claims and node_id not in self._timers:
                log.info("reaping stale presence org_id=%s node_id=%s", org_id, node_id)
                self._queue(node_id, Update(org_id, False))

    async def _heartbeat_forever(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except Exception:
                log.exception("presence heartbeat failed; trying again")
            await asyncio.sleep(self._timing.heartbeat)

    def claim(
        self,
        node_id: str,
        org_id: str,
        stream_id: int,
        endpoints: list[str],
        listen_port: int,
    ) -> None:
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        self._claims.setdefault(node_id, []).append(stream_id)
        self._queue(node_id, Update(org_id, True, tuple(endpoints), listen_port))

    def claim_update(
        self, node_id: str, org_id: str, endpoints: list[str], listen_port: int
    ) -> None:
        """New endpoints from a node already holding a stream."""
        if node_id in self._claims:
            self._queue(node_id, Update(org_id, True, tuple(endpoints), listen_port))

    def release(self, node_id: str, org_id: str, stream_id: int) -> bool:
        """A stream ended; True if it was the node's last open stream."""
        streams = self._claims.get(node_id, [])
        if stream_id in streams:
            streams.remove(stream_id)
        if streams:
            return False
        self._claims.pop(node_id, None)
        self._start_timer(node_id, org_id, self._timing.grace)
        return True

    def stream_count(self, node_id: str) -> int:
        return len(self._claims.get(node_id, ()))

    def is_online(self, node_id: str) -> bool:
        return node_id in self._claims

    def _start_timer(self, node_id: str, org_id: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers[node_id] = loop.call_later(delay, self._expire, node_id, org_id)

    def _expire(self, node_id: str, org_id: str) -> None:
        self._timers.pop(node_id, None)
        if node_id not in self._claims:
            self._queue(node_id, Update(org_id, False))

    def _queue(self, node_id: str, update: Update) -> None:
        # The latest word on a node wins: online-then-offline within one
        # flush is just offline.
        self._pending[node_id] = update
        self._dirty.set()

    async def flush(self) -> None:
        """Write what is pending now (also used by tests and shutdown)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            touched = await in_transaction(
                self._writers, lambda session: _apply(session, batch)
            )
        except Exception:
            log.exception("presence write failed; retrying")
            for node_id, update in batch.items():
                self._pending.setdefault(node_id, update)
            raise
        for org_id in touched:
            self._hub.notify(org_id)

    async def _flush_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await asyncio.sleep(self._timing.flush_interval)
            try:
                await self.flush()
            except Exception:
                await asyncio.sleep(0.5)
                self._dirty.set()


def _apply(session: Session, batch: dict[str, Update]) -> set[str]:
    """Write a batch of presence updates; returns the orgs whose map changed."""
    orgs = accounts.orgs_for_update(session, (u.org_id for u in batch.values()))
    nodes: list[Node] = []
    ids = list(batch)
    for start in range(0, len(ids), QUERY_CHUNK):
        chunk = ids[start : start + QUERY_CHUNK]
        found = session.scalars(select(Node).where(Node.id.in_(chunk)))
        nodes.extend(found.unique())
    touched: set[str] = set()
    now = utcnow()
    for node in nodes:
        update = batch[node.id]
        if node.revoked_at is not None:
            continue
        if update.online:
            node.last_seen_at = now
        if _change(session, node, update):
            node.last_seen_at = now
            changelog.record_change(session, orgs[node.org_id], ChangeOp.UPSERT, node)
            touched.add(node.org_id)
    return touched


def _change(session: Session, node: Node, update: Update) -> bool:
    """Apply one update to a node; True if its peer entry changed."""
    changed = False
    if update.online != node.online:
        node.online = update.online
        changed = True
        event = (
            activity.EventType.CONNECTED
            if update.online
            else activity.EventType.DISCONNECTED
        )
        summary = "opened its stream" if update.online else "went offline"
        activity.record(session, node, event, summary)
        log.info(
            "node %s org_id=%s node_id=%s",
            "online" if update.online else "offline",
            node.org_id,
            node.id,
        )
    if update.online and (
        list(update.endpoints) != list(node.endpoints)
        or update.listen_port != node.listen_port
    ):
        activity.record(
            session,
            node,
            activity.EventType.ENDPOINT_CHANGED,
            "endpoints now " + (", ".join(update.endpoints) or "none"),
            {"from": list(node.endpoints), "to": list(update.endpoints)},
        )
        node.endpoints = list(update.endpoints)
        node.listen_port = update.listen_port
        changed = True
    return changed

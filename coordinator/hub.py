"""The open Sync streams of this process and the fan-out that feeds them.

Each org with an open stream has a feed. The feed holds the org's peer list
at one version, materialised from the change log, and a task that reads
the log after each wake-up and turns what it finds into one ``Broadcast`` —
built and serialised once — for every subscriber of the org:

    commit (change row + version bump) ── notify ──> OrgFeed
        OrgFeed: wait for quiet (coalescing), read log, update peer list,
                 encode one delta ──> each Subscriber's bounded queue
        stream writer: queue ──> grpc write

A change after a calm is delivered at once. Changes that arrive close
behind it become one delta: the feed waits until the log has been quiet for
``quiet`` seconds, or ``max_delay`` after the first change, whichever is
first; within a burst longer still (see ``Coalescing``). Full maps come
from the feed's peer list (never from a query per node); the peer list is
encoded once per version and shared by every full map at that version.

Subscribers have bounded queues; one that falls behind loses its queued
deltas and is sent one fresh full map instead, so a slow consumer costs
only itself. Fan-out is driven from the log, not from the code that made
the change: a wake-up says only "look at the log", and the feed also looks
every ``LOG_POLL_SECONDS``, so a change committed by another process (the
operator's CLI, another replica) is delivered the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from coordinator import changelog, metrics, peermap
from coordinator.changes import Change, ChangeOp
from coordinator.models import Org
from coordinator.store import Database, read
from runmesh.v1 import mesh_pb2, node_pb2

log = logging.getLogger(__name__)

QUEUE_LIMIT = 64
LOG_POLL_SECONDS = 1.0
# grpc.aio here writes about 5,000 messages a second in all. In a burst,
# fan-out may take about a fifth of that, so stream set-ups (a reconnect
# storm's other half) keep most of the process.
BURST_WRITES_PER_SECOND = 1_000


@dataclass(frozen=True)
class Coalescing:
    """When the feed delivers what it has found in the log.

    A change after a calm (no delivery for ``burst_window``, nor for as long
    as one write to every subscriber takes at ``BURST_WRITES_PER_SECOND``)
    is delivered at once if no other write of this process is under way:
    the lone change an operator makes is the common case, and waiting would
    only delay it. Changes close behind that one, or a change after a calm
    with other writes still coming (a script's hundred renames), are
    delivered once the log has been quiet for ``quiet`` (at most
    ``max_delay`` after the first of them). After that, a change within
    ``burst_window`` of the last delivery is part of a burst (a long
    script, a reconnect storm): the feed then waits no less than one write
    per subscriber after the last delivery, then for ``burst_quiet`` of
    quiet, at most ``burst_max_delay``, so a burst becomes a few deltas per
    node instead of one per change.
    """

    quiet: float = 0.01
    max_delay: float = 0.25
    burst_window: float = 1.0
    burst_quiet: float = 0.1
    burst_max_delay: float = 0.5

    @classmethod
    def from_quiet(cls, quiet: float) -> Coalescing:
        """The rules for one setting of ``--coalesce-ms``: everything else
        in proportion, as the defaults are to 10 ms."""
        return cls(
            quiet=quiet,
            max_delay=max(0.05, 25 * quiet),
            burst_quiet=10 * quiet,
            burst_max_delay=max(0.1, 50 * quiet),
        )

    def plan(
        self,
        since_delivery: float,
        subscribers: int,
        after_lead: bool,
        writing: bool = False,
    ) -> Wait:
        """How to wait before delivering a change that woke the feed,
        ``since_delivery`` seconds after the last delivery, which was made
        at once if ``after_lead``; ``writing`` if other writes of this
        process are under way."""
        spacing = subscribers / BURST_WRITES_PER_SECOND
        calm = since_delivery >= max(self.burst_window, spacing)
        if calm and not writing:
            return Wait(at_once=True)
        if calm or after_lead or since_delivery >= self.burst_window:
            return Wait(quiet=self.quiet, longest=self.max_delay)
        return Wait(
            first=spacing - since_delivery,
            quiet=self.burst_quiet,
            longest=self.burst_max_delay,
        )


@dataclass(frozen=True)
class Wait:
    """One wait of a feed before it delivers: at once; or ``first``
    seconds, then until the log has been quiet for ``quiet``, at most
    ``longest`` after that."""

    at_once: bool = False
    first: float = 0.0
    quiet: float = 0.0
    longest: float = 0.0


@dataclass(frozen=True)
class Broadcast:
    """Changes (from_version, to_version] of one org, encoded once."""

    from_version: int
    to_version: int
    changes: tuple[Change, ...]
    encoded: bytes
    # perf_counter() when the feed read the changes, for fan-out latency.
    read_at: float = 0.0

    def follows(self, version: int) -> bool:
        """Whether this is the next delta for a stream at ``version``."""
        return self.from_version == version


@dataclass(frozen=True)
class Revocation:
    reason: str


class FullMapNeeded:
    """Queued in place of deltas a subscriber could not keep up with."""


@dataclass(frozen=True)
class ReconnectRequest:
    """This process is shutting down: the node should go elsewhere."""

    reason: str
    retry_within_ms: int


QueueItem = Broadcast | Revocation | FullMapNeeded | ReconnectRequest


@dataclass(eq=False)
class Subscriber:
    """One open stream as the feed sees it: a bounded inbox and a wake-up.

    The inbox is a plain deque and ``wake`` an Event the stream's writer
    waits on; the writer drains everything queued at each wake-up. This is
    the least a fan-out to thousands of streams can do per stream (one
    Event per stream, as a bare grpc.aio server would), and it lets the
    writer wait for its own reasons (a node request, the stream's end) on
    the same Event.
    """

    stream_id: int
    org_id: str
    node_id: str
    public_key: str
    # The version of the last map or delta queued for or written to the
    # stream; the writer keeps it current.
    version: int = 0
    limit: int = QUEUE_LIMIT
    inbox: collections.deque[QueueItem] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    resets: int = 0

    def offer(self, item: QueueItem) -> None:
        if len(self.inbox) >= self.limit:
            self._reset_to_full_map(item)
        else:
            self.inbox.append(item)
        self.wake.set()

    def take_next_delta(self) -> Broadcast | None:
        """The inbox's only item, taken, if it is the delta that follows
        ``version``; else None and the inbox is left as it was."""
        inbox = self.inbox
        if len(inbox) == 1:
            item = inbox[0]
            if isinstance(item, Broadcast) and item.follows(self.version):
                inbox.clear()
                return item
        return None

    def take(self) -> list[QueueItem]:
        items = list(self.inbox)
        self.inbox.clear()
        return items

    def _reset_to_full_map(self, incoming: QueueItem) -> None:
        # Deltas can be replaced by a full map; the end of the stream
        # (revoked, or asked to reconnect) cannot, so it is kept.
        endings = [
            item
            for item in (*self.inbox, incoming)
            if isinstance(item, Revocation | ReconnectRequest)
        ]
        self.resets += 1
        metrics.SLOW_CONSUMER_RESETS.inc()
        log.warning(
            "slow consumer reset to a full map org_id=%s node_id=%s",
            self.org_id,
            self.node_id,
        )
        self.inbox.clear()
        self.inbox.append(FullMapNeeded())
        self.inbox.extend(endings[:1])


def encode_delta(from_version: int, changes: tuple[Change, ...]) -> bytes:
    delta = peermap.compose_delta(from_version, changes)
    return mesh_pb2.CoordinatorMessage(delta=delta).SerializeToString()


class OrgFeed:
    def __init__(
        self,
        org_id: str,
        readers: Database,
        coalescing: Coalescing,
        on_broadcast: Callable[[Broadcast, int], None] | None = None,
        recent: changelog.RecentCommits | None = None,
        writing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.org_id = org_id
        # Whether this process has writes under way (more changes coming).
        self._writing = writing
        # Changes this process committed, taken without reading them back.
        self._recent = recent or changelog.RecentCommits()
        self.version = 0
        self.subscribers: dict[int, Subscriber] = {}
        self._readers = readers
        self._coalescing = coalescing
        self._on_broadcast = on_broadcast
        self._peers: dict[str, node_pb2.Peer] = {}
        self._self_configs: dict[str, node_pb2.SelfConfig] = {}
        self._encoded_peers: bytes | None = None
        self._prefixes = peermap.PrefixLengths(32, 128)
        self._wake = asyncio.Event()
        self._delivered_at = float("-inf")
        # Whether the last delivery went at once (see Coalescing).
        self._last_at_once = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the org's peer list and version in one consistent read."""

        def load(session: Session) -> None:
            org = session.get(Org, self.org_id)
            if org is None:
                raise LookupError(f"no org {self.org_id}")
            nodes = peermap.active_nodes(session, org.id)
            self.version = org.mesh_version
            self._peers = {n.public_key: peermap.peer_of(n) for n in nodes}
            self._self_configs = {n.public_key: peermap.self_of(n, org) for n in nodes}
            self._prefixes = peermap.prefix_lengths(org)

        await read(self._readers, load)
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.org_id}")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---- maps ----

    def full_map(self, public_key: str) -> bytes:
        """The encoded full map of one node at ``self.version``.

        Two serialised messages concatenated parse as their merge, so the
        shared, encoded peer list is appended to a small per-node header
        instead of encoding every peer once per node.
        """
        if self._encoded_peers is None:
            peers = node_pb2.PeerMap(peers=list(self._peers.values()))
            self._encoded_peers = mesh_pb2.CoordinatorMessage(
                full_map=peers
            ).SerializeToString()
        own = self._self_configs.get(public_key)
        header = node_pb2.PeerMap(version=self.version, self=own)
        return (
            mesh_pb2.CoordinatorMessage(full_map=header).SerializeToString()
            + self._encoded_peers
        )

    def holds(self, public_key: str) -> bool:
        return public_key in self._peers

    def peer_count(self) -> int:
        return len(self._peers)

    # ---- the fan-out task ----

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LOG_POLL_SECONDS)
            at_once = await self._wait_for_quiet()
            try:
                await self._deliver_new_changes(at_once)
            except Exception:
                # The log is still there; the next round reads again from
                # self.version, so nothing is lost by giving up on this one.
                log.exception("fan-out failed org_id=%s", self.org_id)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _wait_for_quiet(self) -> bool:
        """Wait as ``Coalescing`` says; True if the delivery goes at once."""
        if not self._wake.is_set():
            return False  # the periodic look at the log: nothing to wait for
        wait = self._coalescing.plan(
            time.monotonic() - self._delivered_at,
            len(self.subscribers),
            self._last_at_once,
            self._writing(),
        )
        self._wake.clear()
        if wait.at_once:
            return True
        if wait.first > 0:
            # One delta costs a write per stream: in a long burst (thousands
            # of nodes coming online) deliver no more often than a fifth of
            # the process's write capacity allows, however quiet the log
            # looks between two of the burst's commits.
            await asyncio.sleep(wait.first)
        deadline = time.monotonic() + wait.longest
        while True:
            self._wake.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._wake.wait(), min(wait.quiet, left))
            except TimeoutError:
                return False  # quiet: deliver what there is

    async def _deliver_new_changes(self, at_once: bool) -> None:
        since = self.version
        changes = tuple(self._recent.following(self.org_id, since))
        if not changes:
            changes = tuple(
                await read(
                    self._readers,
                    lambda session: changelog.changes_since(
                        session, self.org_id, since
                    ),
                )
            )
        if not changes:
            return
        self._delivered_at = time.monotonic()
        self._last_at_once = at_once
        read_at = time.perf_counter()
        broadcast = Broadcast(
            from_version=self.version,
            to_version=changes[-1].version,
            changes=changes,
            encoded=encode_delta(self.version, changes),
            read_at=read_at,
        )
        self._apply(changes)
        metrics.COALESCED_CHANGES.inc(len(changes) - 1)
        removed = {c.node_id for c in changes if c.op == ChangeOp.REMOVE}
        rekeyed = {c.public_key for c in changes if c.op == ChangeOp.REKEY}
        subscribers = list(self.subscribers.values())
        for subscriber in subscribers:
            subscriber.offer(broadcast)
        if removed or rekeyed:
            # Queued after the broadcast that ends them.
            for subscriber in subscribers:
                if subscriber.node_id in removed:
                    subscriber.offer(Revocation("node revoked"))
                elif subscriber.public_key in rekeyed:
                    # Opened with the old key: come back with the new one.
                    subscriber.offer(ReconnectRequest("node key rotated", 500))
        if self._on_broadcast is not None:
            self._on_broadcast(broadcast, len(self.subscribers))

    def _apply(self, changes: tuple[Change, ...]) -> None:
        for change in changes:
            if change.op in (ChangeOp.REMOVE, ChangeOp.REKEY):
                self._peers.pop(change.public_key, None)
                self._self_configs.pop(change.public_key, None)
            if change.peer is not None:
                key = change.peer.public_key
                self._peers[key] = change.peer
                self._self_configs[key] = peermap.self_from_peer(
                    change.peer, self._prefixes
                )
        self.version = changes[-1].version
        self._encoded_peers = None


class Hub:
    def __init__(
        self,
        readers: Database,
        coalescing: Coalescing | None = None,
        on_broadcast: Callable[[Broadcast, int], None] | None = None,
        queue_limit: int = QUEUE_LIMIT,
        recent: changelog.RecentCommits | None = None,
        writers: Database | None = None,
    ) -> None:
        self._readers = readers
        self._recent = recent
        self._writers = writers
        self._queue_limit = queue_limit
        self._coalescing = coalescing or Coalescing()
        self._on_broadcast = on_broadcast
        self._feeds: dict[str, OrgFeed] = {}
        self._starting: dict[str, asyncio.Future[OrgFeed]] = {}
        self._ids = itertools.count(1)

    async def feed(self, org_id: str) -> OrgFeed:
        feed = self._feeds.get(org_id)
        if feed is not None:
            return feed
        starting = self._starting.get(org_id)
        if starting is not None:
            return await asyncio.shield(starting)
        future: asyncio.Future[OrgFeed] = asyncio.get_running_loop().create_future()
        self._starting[org_id] = future
        try:
            feed = OrgFeed(
                org_id,
                self._readers,
                self._coalescing,
                self._on_broadcast,
                self._recent,
                self._writing,
            )
            await feed.start()
            self._feeds[org_id] = feed
            future.set_result(feed)
            return feed
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._starting[org_id]

    def _writing(self) -> bool:
        return self._writers is not None and self._writers.in_flight > 0

    def subscribe(self, feed: OrgFeed, node_id: str, public_key: str) -> Subscriber:
        """Register a stream at the feed's current version (no await: the
        version and the subscription cannot drift apart)."""
        subscriber = Subscriber(
            next(self._ids),
            feed.org_id,
            node_id,
            public_key,
            limit=self._queue_limit,
        )
        subscriber.version = feed.version
        feed.subscribers[subscriber.stream_id] = subscriber
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        feed = self._feeds.get(subscriber.org_id)
        if feed is not None:
            feed.subscribers.pop(subscriber.stream_id, None)

    def notify(self, org_id: str) -> None:
        """Something was committed to ``org_id``'s change log."""
        feed = self._feeds.get(org_id)
        if feed is not None:
            feed.wake()

    def stream_count(self) -> int:
        return sum(len(f.subscribers) for f in self._feeds.values())

    def ask_everyone_to_reconnect(self, reason: str, within_ms: int) -> int:
        """Queue a Reconnect for every stream; returns how many were asked."""
        asked = 0
        for feed in self._feeds.values():
            for subscriber in feed.subscribers.values():
                subscriber.offer(ReconnectRequest(reason, within_ms))
                asked += 1
        return asked

    async def close(self) -> None:
        for feed in self._feeds.values():
            await feed.close()
        self._feeds.clear()

"""One node's Sync stream: authenticate, send the first map, then deltas.

The stream runs as two tasks. The reader takes the node's messages (hello,
keepalives, resync requests) and notes when it last heard from the node;
the writer sends the challenge, the first map and then whatever the hub
queues, plus keepalives. Reads and writes are never wrapped in timeouts
that cancel them (that leaks per-stream memory in grpc); deadlines are
enforced by the writer, which ends the stream.

The first map is a resume when it can be: if the node's hello names a
version the change log still holds every change after, the node is sent
exactly those changes as one delta (an empty one if nothing changed);
otherwise a full map.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from coordinator import changelog, metrics, nodeauth, nodes, peermap
from coordinator.errors import (
    CoordinatorError,
    InvalidArgument,
    Malformed,
    Overloaded,
    PermissionDenied,
    Unavailable,
)
from coordinator.gate import SetupGate
from coordinator.hub import (
    Broadcast,
    FullMapNeeded,
    Hub,
    OrgFeed,
    QueueItem,
    ReconnectRequest,
    Revocation,
    Subscriber,
)
from coordinator.ids import utcnow
from coordinator.keepalive import KeepaliveClock
from coordinator.models import Node, Org
from coordinator.presence import Presence
from coordinator.settings import Settings
from coordinator.store import Database, in_transaction, read
from runmesh.challenge import ROTATE_CONTEXT
from runmesh.v1 import mesh_pb2

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
MAX_ENDPOINTS = 16
# Open streams one node may hold at once: a reconnect overlaps the old
# stream for a moment; more than a few means something is wrong.
MAX_STREAMS_PER_NODE = 4
# Requests (resync, key rotation) a node may have waiting; more closes the stream.
MAX_PENDING_REQUESTS = 16
# How long a new node's first stream waits for the feed to learn of it.
FEED_CATCH_UP_SECONDS = 3.0
# How long a failed write waits to learn whether the node hung up.
HANG_UP_SECONDS = 1.0

Write = Callable[[bytes], Awaitable[None]]

# A fan-out counts once per stream: kept without locks (see StreamWrites).
_writes = metrics.STREAM_WRITES


def _sent_next_delta(subscriber: Subscriber, item: Broadcast) -> None:
    """After a broadcast's shared bytes were written to a stream at the
    version it follows: the stream is at the broadcast's version."""
    _writes.delta_written(time.perf_counter() - item.read_at)
    subscriber.version = item.to_version


@dataclass
class StreamStats:
    full_maps: int = 0
    resumed: int = 0
    opened: int = 0


@dataclass
class StreamDeps:
    readers: Database
    writers: Database
    hub: Hub
    presence: Presence
    identity: nodeauth.CoordinatorIdentity
    settings: Settings
    gate: SetupGate
    keepalives: KeepaliveClock
    stats: StreamStats = field(default_factory=StreamStats)
    # Set on SIGTERM: new streams are refused so nodes go to another replica.
    shutting_down: bool = False


def _encode(message: mesh_pb2.CoordinatorMessage) -> bytes:
    return message.SerializeToString()


class NodeStream:
    def __init__(
        self,
        deps: StreamDeps,
        incoming: AsyncIterator[mesh_pb2.NodeMessage],
        write: Write,
        source_ip: str | None,
    ) -> None:
        self._deps = deps
        self._incoming = incoming
        self._write = write
        self._source_ip = source_ip
        self._hello: asyncio.Future[mesh_pb2.Hello] = (
            asyncio.get_running_loop().create_future()
        )
        self._last_heard = time.monotonic()
        self._nonce = b""
        self._subscriber: Subscriber | None = None
        # The node's latest endpoints sent after its hello but before the
        # stream was set up (meshd sends them as soon as it has said hello):
        # applied once the node's presence is claimed, not dropped.
        self._early_endpoints: mesh_pb2.EndpointUpdate | None = None
        # What the node asked for mid-stream (resync, a key rotation),
        # handled by the writer in order.
        self._requests: collections.deque[mesh_pb2.NodeMessage] = collections.deque()
        self._ended = asyncio.Event()
        # Why the reader refused the node's messages, if it did: the
        # stream ends with that status, not as if the node had hung up.
        self._refused: CoordinatorError | None = None

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._serve()
        except (CoordinatorError, OperationalError):
            raise  # answered with their status (see rpc.boundary)
        except Exception as exc:
            if not await self._node_hung_up():
                raise
            # A write to a node that hung up fails with grpc's own batch
            # error, not a status: the node went away, nothing went wrong.
            log.info("stream ended: the node hung up (%s)", type(exc).__name__)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self) -> None:
        try:
            async for message in self._incoming:
                if isinstance(message, Malformed):
                    raise message.refuse()
                self._last_heard = time.monotonic()
                kind = message.WhichOneof("kind")
                if kind == "hello" and not self._hello.done():
                    self._hello.set_result(message.hello)
                elif kind in ("resync", "rotate_key"):
                    if len(self._requests) >= MAX_PENDING_REQUESTS:
                        raise InvalidArgument("too many requests in flight")
                    self._requests.append(message)
                    self._wake_writer()
                elif kind == "endpoints" and self._subscriber is not None:
                    self._update_endpoints(self._subscriber, message.endpoints)
                elif kind == "endpoints" and self._hello.done():
                    self._early_endpoints = message.endpoints
        except CoordinatorError as exc:
            self._refused = exc
        finally:
            self._ended.set()
            self._wake_writer()

    async def _node_hung_up(self) -> bool:
        """Whether the node's side of the stream has ended (the reader sees
        that a moment after a write to it fails), without a refusal."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), HANG_UP_SECONDS)
        return self._ended.is_set() and self._refused is None

    def _raise_refusal(self) -> None:
        """The reader stopped: raise why, if it refused something."""
        if self._refused is not None:
            raise self._refused

    def _wake_writer(self) -> None:
        if self._subscriber is not None:
            self._subscriber.wake.set()

    async def _serve(self) -> None:
        nonce = self._nonce = nodeauth.new_challenge()
        challenge = mesh_pb2.Challenge(
            nonce=nonce, coordinator_public_key=self._deps.identity.public_key
        )
        await self._write(_encode(mesh_pb2.CoordinatorMessage(challenge=challenge)))
        hello = await self._await_hello()
        if hello is None:
            return
        endpoints = self._endpoints_of(hello)
        if self._deps.shutting_down:
            raise Unavailable("this coordinator is shutting down; use another")

        try:
            subscriber, feed = await self._set_up(hello, nonce, endpoints)
        except Overloaded:
            metrics.STREAM_SETUPS.labels("overloaded").inc()
            raise
        except PermissionDenied:
            metrics.STREAM_SETUPS.labels("denied").inc()
            raise
        except BaseException:
            metrics.STREAM_SETUPS.labels("failed").inc()
            raise
        metrics.STREAM_SETUPS.labels("ok").inc()
        metrics.STREAMS_OPEN.inc()
        self._subscriber = subscriber
        if self._early_endpoints is not None:
            self._update_endpoints(subscriber, self._early_endpoints)
            self._early_endpoints = None
        reason = "stream ended"
        try:
            reason = await self._pump(feed, subscriber)
        finally:
            metrics.STREAMS_OPEN.dec()
            self._close(subscriber, reason)

    async def _set_up(
        self, hello: mesh_pb2.Hello, nonce: bytes, endpoints: list[str]
    ) -> tuple[Subscriber, OrgFeed]:
        async with self._deps.gate.admit():
            node = await self._authenticate(hello, nonce)
            if self._deps.presence.stream_count(node.id) >= MAX_STREAMS_PER_NODE:
                raise Overloaded(
                    f"this node already holds {MAX_STREAMS_PER_NODE} open streams",
                    retry_after=5,
                )
            feed = await self._feed_holding(node)
            subscriber = self._deps.hub.subscribe(feed, node.id, node.public_key)
            self._deps.presence.claim(
                node.id, node.org_id, subscriber.stream_id, endpoints, hello.listen_port
            )
            self._deps.stats.opened += 1
            log.info("stream opened org_id=%s node_id=%s", node.org_id, node.id)
            try:
                await self._send_first_map(feed, subscriber, hello.last_version)
            except BaseException:
                self._close(subscriber, "failed before its first map")
                raise
        return subscriber, feed

    async def _await_hello(self) -> mesh_pb2.Hello | None:
        ended = asyncio.ensure_future(self._ended.wait())
        waiters: set[asyncio.Future[Any]] = {self._hello, ended}
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=HELLO_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ended.cancel()
        if self._hello.done():
            return self._hello.result()
        if not done:
            raise PermissionDenied("no hello within the time allowed")
        self._raise_refusal()
        return None

    async def _authenticate(self, hello: mesh_pb2.Hello, nonce: bytes) -> Node:
        node = await read(
            self._deps.readers,
            lambda session: nodes.node_by_key(session, hello.public_key),
        )
        if node is None:
            raise PermissionDenied("unknown or revoked node key")
        self._deps.identity.verify(hello.public_key, nonce, hello.challenge_answer)
        return node

    async def _feed_holding(self, node: Node) -> OrgFeed:
        """The org's feed, once it has applied the change that added ``node``
        (a node may open its stream moments after its approval)."""
        feed = await self._deps.hub.feed(node.org_id)
        deadline = time.monotonic() + FEED_CATCH_UP_SECONDS
        while not feed.holds(node.public_key):
            if time.monotonic() > deadline:
                raise PermissionDenied("the node is not (or no longer) in the mesh")
            feed.wake()
            await asyncio.sleep(0.02)
        return feed

    def _endpoints_of(self, hello: mesh_pb2.Hello) -> list[str]:
        if len(hello.endpoints) > MAX_ENDPOINTS:
            raise InvalidArgument(f"hello: at most {MAX_ENDPOINTS} endpoints")
        if hello.listen_port > 65535:
            raise InvalidArgument("hello: listen_port must be 0-65535")
        endpoints = [_check_endpoint(e) for e in hello.endpoints]
        # The address the stream came from is often the one peers can reach
        # (a NAT's outside address); offer it after what the node reported.
        source = _parse_ip(self._source_ip)
        if source is not None and _reachable(source) and hello.listen_port:
            seen = _format_endpoint(str(source), hello.listen_port)
            if seen not in endpoints:
                endpoints.append(seen)
        return endpoints

    async def _send_first_map(
        self, feed: OrgFeed, subscriber: Subscriber, last_version: int
    ) -> None:
        delta = await self._resume_delta(subscriber, last_version)
        if delta is None:
            await self._send_full_map(feed, subscriber)
            return
        self._deps.stats.resumed += 1
        _writes.count("resume")
        await self._write(_encode(mesh_pb2.CoordinatorMessage(delta=delta)))

    async def _resume_delta(
        self, subscriber: Subscriber, last_version: int
    ) -> Any | None:
        """The delta from the node's version to the subscription's, if the
        log still holds every change in between; None means a full map."""
        target = subscriber.version
        if last_version <= 0 or last_version > target:
            return None
        if last_version == target:
            return peermap.compose_delta(last_version, ())
        changes = await read(
            self._deps.readers,
            lambda session: changelog.changes_since(
                session, subscriber.org_id, last_version, limit=target - last_version
            ),
        )
        wanted = range(last_version + 1, target + 1)
        if [c.version for c in changes] != list(wanted):
            return None  # pruned from the log (or not contiguous): start over
        return peermap.compose_delta(last_version, changes)

    async def _send_full_map(self, feed: OrgFeed, subscriber: Subscriber) -> None:
        subscriber.version = feed.version
        self._deps.stats.full_maps += 1
        _writes.count("full_map")
        await self._write(feed.full_map(subscriber.public_key))

    async def _pump(self, feed: OrgFeed, subscriber: Subscriber) -> str:
        """Write queued items until the stream ends; returns why it ended.

        One Event per stream, drained whole at each wake-up: the feed's
        offers, the node's requests, the stream's end and the keepalive
        clock all set it.
        """
        settings = self._deps.settings
        deadline = settings.keepalive_interval * settings.keepalive_misses
        clock = self._deps.keepalives
        beat = clock.start(subscriber.wake)
        wake = subscriber.wake
        write = self._write
        wake.set()  # anything that came during the set-up
        try:
            while True:
                await wake.wait()
                wake.clear()
                if not (self._requests or beat.owed or self._ended.is_set()):
                    # The common wake-up, once per stream in every fan-out:
                    # the next delta and nothing else to do, written
                    # without the general path's steps below (see
                    # docs/performance.md for what they cost). The node's
                    # keepalive deadline is checked at every keepalive due.
                    delta = subscriber.take_next_delta()
                    if delta is not None:
                        # The write is awaited here, not in a coroutine of
                        # its own: one coroutine (and its resumption) less
                        # per stream per fan-out.
                        await write(delta.encoded)
                        _sent_next_delta(subscriber, delta)
                        continue
                if self._ended.is_set():
                    self._raise_refusal()
                    return "node closed the stream"
                if time.monotonic() - self._last_heard > deadline:
                    return "node silent past its keepalive deadline"
                while self._requests:
                    asked = self._requests.popleft()
                    if asked.WhichOneof("kind") == "resync":
                        await self._send_full_map(feed, subscriber)
                    else:
                        await self._rotate_key(subscriber, asked.rotate_key)
                for item in subscriber.take():
                    if not await self._deliver(feed, subscriber, item):
                        if isinstance(item, ReconnectRequest):
                            return "coordinator shutting down"
                        return "node revoked"
                if beat.owed:
                    await self._send_keepalive()
                    clock.sent(beat)
        finally:
            clock.stop(beat)

    def _update_endpoints(
        self, subscriber: Subscriber, update: mesh_pb2.EndpointUpdate
    ) -> None:
        hello = mesh_pb2.Hello(
            endpoints=update.endpoints, listen_port=update.listen_port
        )
        try:
            endpoints = self._endpoints_of(hello)
        except InvalidArgument as exc:
            log.warning("ignoring endpoints node_id=%s: %s", subscriber.node_id, exc)
            return
        self._deps.presence.claim_update(
            subscriber.node_id, subscriber.org_id, endpoints, update.listen_port
        )

    async def _rotate_key(
        self, subscriber: Subscriber, request: mesh_pb2.RotateKey
    ) -> None:
        """Switch the node to a new key proven on this stream."""
        self._deps.identity.verify(
            request.new_public_key,
            self._nonce,
            request.new_key_answer,
            context=ROTATE_CONTEXT,
        )
        node_id, old_key = subscriber.node_id, subscriber.public_key

        def work(session: Session) -> int:
            nodes.rotate_key(session, node_id, old_key, request.new_public_key)
            org = session.get(Org, subscriber.org_id)
            assert org is not None
            return org.mesh_version

        version = await in_transaction(self._deps.writers, work)
        self._deps.hub.notify(subscriber.org_id)
        log.info("node key rotated org_id=%s node_id=%s", subscriber.org_id, node_id)
        rotated = mesh_pb2.KeyRotated(
            new_public_key=request.new_public_key, version=version
        )
        await self._write(_encode(mesh_pb2.CoordinatorMessage(key_rotated=rotated)))

    async def _deliver(
        self, feed: OrgFeed, subscriber: Subscriber, item: QueueItem
    ) -> bool:
        if isinstance(item, Revocation):
            revoked = mesh_pb2.Revoked(reason=item.reason)
            await self._write(_encode(mesh_pb2.CoordinatorMessage(revoked=revoked)))
            return False
        if isinstance(item, ReconnectRequest):
            reconnect = mesh_pb2.Reconnect(
                reason=item.reason, retry_within_ms=item.retry_within_ms
            )
            message = mesh_pb2.CoordinatorMessage(reconnect=reconnect)
            await self._write(_encode(message))
            return False
        if isinstance(item, FullMapNeeded):
            await self._send_full_map(feed, subscriber)
        elif isinstance(item, Broadcast):
            await self._send_broadcast(feed, subscriber, item)
        return True

    async def _send_broadcast(
        self, feed: OrgFeed, subscriber: Subscriber, item: Broadcast
    ) -> None:
        if item.to_version <= subscriber.version:
            return  # already covered by the map this stream was sent
        if item.follows(subscriber.version):
            await self._write(item.encoded)
            _sent_next_delta(subscriber, item)
            return
        if item.from_version < subscriber.version:
            rest = tuple(c for c in item.changes if c.version > subscriber.version)
            delta = peermap.compose_delta(subscriber.version, rest)
            await self._write(_encode(mesh_pb2.CoordinatorMessage(delta=delta)))
        else:
            await self._send_full_map(feed, subscriber)
            return
        _writes.count("delta")
        subscriber.version = item.to_version

    async def _send_keepalive(self) -> None:
        keepalive = mesh_pb2.Keepalive()
        keepalive.sent_at.FromDatetime(utcnow())
        await self._write(_encode(mesh_pb2.CoordinatorMessage(keepalive=keepalive)))

    def _close(self, subscriber: Subscriber, reason: str) -> None:
        self._deps.hub.unsubscribe(subscriber)
        self._deps.presence.release(
            subscriber.node_id, subscriber.org_id, subscriber.stream_id
        )
        log.info(
            "stream closed org_id=%s node_id=%s reason=%s",
            subscriber.org_id,
            subscriber.node_id,
            reason,
        )


_ENDPOINT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})$"
)


def _check_endpoint(text: str) -> str:
    """An underlay endpoint peers can send to: ``ip:port`` or ``[ip6]:port``.

    Refused: zone-scoped or link-local addresses (meaningless on another
    host), unspecified, multicast, broadcast and loopback addresses, IPv6
    without brackets, and anything but ASCII digits in the port.
    """
    shown = text[:64]
    match = _ENDPOINT.fullmatch(text) if text.isascii() else None
    if match is None:
        raise InvalidArgument(f"hello: endpoint {shown!r} is not ip:port or [ip6]:port")
    try:
        address = ipaddress.ip_address(match["v6"] or match["v4"])
    except ValueError:
        raise InvalidArgument(f"hello: endpoint {shown!r} has no valid IP") from None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"hello: endpoint {shown!r} has no valid port")
    if not _reachable(address):
        raise InvalidArgument(f"hello: endpoint {shown!r} is not reachable by peers")
    return _format_endpoint(str(address), port)


def _parse_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None


def _reachable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        address.is_unspecified
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address == ipaddress.IPv4Address("255.255.255.255")
    )


def _format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

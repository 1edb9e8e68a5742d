"""One node's Sync stream: authenticate, send the full map, then deltas.

The stream runs as two tasks. The reader takes the node's messages (hello,
keepalives, resync requests) and notes when it last heard from the node;
the writer sends the challenge, the first full map and then whatever the
hub queues, plus keepalives. Reads and writes are never wrapped in
timeouts that cancel them (that leaks per-stream memory in grpc); deadlines
are enforced by the writer, which ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator import changelog, nodeauth, nodes, peermap
from coordinator.errors import InvalidArgument, PermissionDenied
from coordinator.hub import Broadcast, FullMapNeeded, Hub, Revocation, Subscriber
from coordinator.ids import utcnow
from coordinator.models import Node, Org
from coordinator.settings import Settings
from runmesh.v1 import mesh_pb2

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
MAX_ENDPOINTS = 16

Write = Callable[[bytes], Awaitable[None]]


@dataclass
class StreamDeps:
    sessions: async_sessionmaker[AsyncSession]
    hub: Hub
    identity: nodeauth.CoordinatorIdentity
    settings: Settings


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
        self._resync = asyncio.Event()
        self._ended = asyncio.Event()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._serve()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self) -> None:
        try:
            async for message in self._incoming:
                self._last_heard = time.monotonic()
                kind = message.WhichOneof("kind")
                if kind == "hello" and not self._hello.done():
                    self._hello.set_result(message.hello)
                elif kind == "resync":
                    self._resync.set()
        finally:
            self._ended.set()

    async def _serve(self) -> None:
        nonce = nodeauth.new_challenge()
        await self._write(
            _encode(
                mesh_pb2.CoordinatorMessage(
                    challenge=mesh_pb2.Challenge(
                        nonce=nonce,
                        coordinator_public_key=self._deps.identity.public_key,
                    )
                )
            )
        )
        hello = await self._await_hello()
        if hello is None:
            return
        endpoints = self._endpoints_of(hello)
        node = await self._authenticate(hello, nonce)
        # Subscribe before marking the node online: the subscription claims
        # the node's presence, so an older stream of the same node that ends
        # now can no longer mark it offline.
        subscriber = await self._deps.hub.subscribe(
            node.org_id, node.id, node.public_key
        )
        log.info("stream opened org_id=%s node_id=%s", node.org_id, node.id)
        reason = "stream ended"
        try:
            await self._come_online(node.id, endpoints, hello.listen_port)
            await self._send_full_map(subscriber)
            reason = await self._pump(subscriber)
        finally:
            await self._close(subscriber, reason)

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
        return None

    async def _authenticate(self, hello: mesh_pb2.Hello, nonce: bytes) -> Node:
        async with self._deps.sessions() as session:
            node = await nodes.node_by_key(session, hello.public_key)
        if node is None:
            raise PermissionDenied("unknown or revoked node key")
        self._deps.identity.verify(hello.public_key, nonce, hello.challenge_answer)
        return node

    async def _come_online(self, node_id: str, endpoints: list[str], port: int) -> None:
        """Mark the node online; an endpoint change is a change to the map."""
        async with self._deps.sessions() as session, session.begin():
            node = await session.get(Node, node_id)
            assert node is not None
            org = await session.get(Org, node.org_id, with_for_update=True)
            assert org is not None  # nodes.org_id is a foreign key
            node.online = True
            node.last_seen_at = utcnow()
            changed = endpoints != list(node.endpoints) or port != node.listen_port
            if changed:
                node.endpoints = endpoints
                node.listen_port = port
                changelog.record_change(session, org, changelog.ChangeOp.UPSERT, node)
        if changed:
            self._deps.hub.notify(org.id)

    def _endpoints_of(self, hello: mesh_pb2.Hello) -> list[str]:
        if len(hello.endpoints) > MAX_ENDPOINTS:
            raise InvalidArgument(f"hello: at most {MAX_ENDPOINTS} endpoints")
        if hello.listen_port > 65535:
            raise InvalidArgument("hello: listen_port must be 0-65535")
        endpoints = [_check_endpoint(e) for e in hello.endpoints]
        # The address the stream came from is often the one peers can reach
        # (a NAT's outside address); offer it after what the node reported.
        if self._source_ip and hello.listen_port:
            seen = _format_endpoint(self._source_ip, hello.listen_port)
            if seen not in endpoints:
                endpoints.append(seen)
        return endpoints

    async def _send_full_map(self, subscriber: Subscriber) -> None:
        async with self._deps.sessions() as session:
            org = await session.get(Org, subscriber.org_id)
            node = await session.get(Node, subscriber.node_id)
            assert org is not None and node is not None
            peer_map = await peermap.full_map(session, org, node)
        await self._write(_encode(mesh_pb2.CoordinatorMessage(full_map=peer_map)))
        subscriber.version = peer_map.version

    async def _pump(self, subscriber: Subscriber) -> str:
        """Write queued items until the stream ends; returns why it ended."""
        settings = self._deps.settings
        deadline = settings.keepalive_interval * settings.keepalive_misses
        ended = asyncio.ensure_future(self._ended.wait())
        resync = asyncio.ensure_future(self._resync.wait())
        try:
            while True:
                get = asyncio.ensure_future(subscriber.queue.get())
                done, _ = await asyncio.wait(
                    {get, ended, resync},
                    timeout=settings.keepalive_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if get not in done:
                    get.cancel()
                if ended in done:
                    return "node closed the stream"
                if time.monotonic() - self._last_heard > deadline:
                    return "node silent past its keepalive deadline"
                if resync in done:
                    self._resync.clear()
                    resync = asyncio.ensure_future(self._resync.wait())
                    await self._send_full_map(subscriber)
                if get not in done:
                    await self._send_keepalive()
                    continue
                if not await self._deliver(subscriber, get.result()):
                    return "node revoked"
        finally:
            ended.cancel()
            resync.cancel()

    async def _deliver(self, subscriber: Subscriber, item: object) -> bool:
        if isinstance(item, Revocation):
            await self._write(
                _encode(
                    mesh_pb2.CoordinatorMessage(
                        revoked=mesh_pb2.Revoked(reason=item.reason)
                    )
                )
            )
            return False
        if isinstance(item, FullMapNeeded):
            await self._send_full_map(subscriber)
        elif isinstance(item, Broadcast):
            await self._send_broadcast(subscriber, item)
        return True

    async def _send_broadcast(self, subscriber: Subscriber, item: Broadcast) -> None:
        if item.to_version <= subscriber.version:
            return  # already in the full map this stream was sent
        if item.from_version == subscriber.version:
            await self._write(item.encoded)
        elif item.from_version < subscriber.version:
            # The stream's full map already covered part of this broadcast.
            rest = tuple(c for c in item.changes if c.version > subscriber.version)
            delta = peermap.compose_delta(subscriber.version, rest)
            await self._write(_encode(mesh_pb2.CoordinatorMessage(delta=delta)))
        else:
            await self._send_full_map(subscriber)
            return
        subscriber.version = item.to_version

    async def _send_keepalive(self) -> None:
        keepalive = mesh_pb2.Keepalive()
        keepalive.sent_at.FromDatetime(utcnow())
        await self._write(_encode(mesh_pb2.CoordinatorMessage(keepalive=keepalive)))

    async def _close(self, subscriber: Subscriber, reason: str) -> None:
        owned = self._deps.hub.unsubscribe(subscriber)
        log.info(
            "stream closed org_id=%s node_id=%s reason=%s",
            subscriber.org_id,
            subscriber.node_id,
            reason,
        )
        if not owned:
            return  # the node is already back on a newer stream
        async with self._deps.sessions() as session, session.begin():
            node = await session.get(Node, subscriber.node_id)
            if node is not None and not self._deps.hub.is_present(node.id):
                node.online = False
                node.last_seen_at = utcnow()


def _check_endpoint(text: str) -> str:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise InvalidArgument(f"hello: endpoint {text[:64]!r} is not ip:port") from None
    if not sep or not 1 <= number <= 65535:
        raise InvalidArgument(f"hello: endpoint {text[:64]!r} has no valid port")
    return _format_endpoint(str(address), number)


def _format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

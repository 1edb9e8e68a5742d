"""One Sync stream to the coordinator, from challenge to end.

Order: read the challenge, answer it in the hello (with the last version
applied and the node's endpoints), then take the full map and deltas. A
delta that does not follow the version held is not applied: the session
asks for a full map instead (``ResyncRequest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import cast

import grpc
from nacl.public import PrivateKey

from meshd import __version__
from meshd.errors import MeshdError, NodeRevoked
from meshd.peermap import PeerMapCopy, VersionGap
from meshd.state import Identity
from runmesh.challenge import answer_challenge
from runmesh.v1 import mesh_pb2, mesh_pb2_grpc, node_pb2

log = logging.getLogger(__name__)

OnMap = Callable[[], Awaitable[None]]
Call = grpc.aio.StreamStreamCall[mesh_pb2.NodeMessage, mesh_pb2.CoordinatorMessage]


class CoordinatorMismatch(MeshdError):
    """The server's key is not the coordinator this node linked with."""


class ReconnectRequested(Exception):
    """The coordinator is going away and asked the node to come back soon,
    to whichever coordinator address answers."""

    def __init__(self, reason: str, within_ms: int) -> None:
        super().__init__(reason)
        self.within = within_ms / 1000


class SyncSession:
    def __init__(
        self,
        identity: Identity,
        private_key: PrivateKey,
        peer_map: PeerMapCopy,
        on_map: OnMap,
        endpoints: list[str],
        listen_port: int,
        keepalive_interval: float = 15.0,
    ) -> None:
        self._identity = identity
        self._key = private_key
        self._map = peer_map
        self._on_map = on_map
        self._endpoints = endpoints
        self._listen_port = listen_port
        self._keepalive_interval = keepalive_interval
        self._write_lock = asyncio.Lock()
        # Set once the first full map of this stream has been applied.
        self.synced = asyncio.Event()

    async def run(self, channel: grpc.aio.Channel) -> None:
        """Hold the stream until it ends; raises NodeRevoked if revoked."""
        call: Call = mesh_pb2_grpc.MeshServiceStub(channel).Sync()
        keepalive = asyncio.create_task(self._send_keepalives(call))
        try:
            await self._handshake(call)
            await self._receive(call)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keepalive
            call.cancel()

    async def _handshake(self, call: Call) -> None:
        first = await _read(call)
        if first is None or first.WhichOneof("kind") != "challenge":
            raise MeshdError("the coordinator did not open with a challenge")
        challenge = first.challenge
        expected = self._identity.coordinator_public_key
        if not secrets.compare_digest(challenge.coordinator_public_key, expected):
            raise CoordinatorMismatch(
                "the server's key differs from the coordinator this node linked with"
            )
        hello = mesh_pb2.Hello(
            public_key=self._identity.public_key,
            challenge_answer=answer_challenge(self._key, expected, challenge.nonce),
            last_version=self._map.version,
            endpoints=self._endpoints,
            listen_port=self._listen_port,
            meshd_version=__version__,
        )
        await self._write(call, mesh_pb2.NodeMessage(hello=hello))

    async def _receive(self, call: Call) -> None:
        while True:
            message = await _read(call)
            if message is None:
                return
            kind = message.WhichOneof("kind")
            if kind == "full_map":
                self._map.replace(message.full_map)
                await self._on_map()
                self.synced.set()
            elif kind == "delta":
                await self._apply_delta(call, message.delta)
            elif kind == "revoked":
                raise NodeRevoked(
                    f"the coordinator revoked this node: {message.revoked.reason}"
                )
            elif kind == "reconnect":
                raise ReconnectRequested(
                    message.reconnect.reason, message.reconnect.retry_within_ms
                )

    async def _apply_delta(self, call: Call, delta: node_pb2.PeerDelta) -> None:
        try:
            self._map.apply(delta)
        except VersionGap as gap:
            log.warning("asking for a full map: %s", gap)
            request = mesh_pb2.ResyncRequest(reason=str(gap))
            await self._write(call, mesh_pb2.NodeMessage(resync=request))
            return
        await self._on_map()

    async def _send_keepalives(self, call: Call) -> None:
        while True:
            await asyncio.sleep(self._keepalive_interval)
            keepalive = mesh_pb2.Keepalive()
            keepalive.sent_at.GetCurrentTime()
            await self._write(call, mesh_pb2.NodeMessage(keepalive=keepalive))

    async def _write(self, call: Call, message: mesh_pb2.NodeMessage) -> None:
        # grpc.aio allows one write at a time per call.
        async with self._write_lock:
            await call.write(message)


async def _read(call: Call) -> mesh_pb2.CoordinatorMessage | None:
    """The next message, or None at the end of the stream."""
    message = await call.read()
    if message is grpc.aio.EOF:
        return None
    return cast(mesh_pb2.CoordinatorMessage, message)

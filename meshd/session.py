"""One Sync stream to the coordinator, from challenge to end.

Order: read the challenge, answer it in the hello (with the last version
applied and the node's endpoints), then take the full map and deltas. A
delta that does not follow the version held is not applied: the session
asks for a full map instead (``ResyncRequest``).

The first message after the hello is a full map, or a delta when the
coordinator could resume from the version the hello named; which one it
was is kept in ``first_message`` for ``meshd status``. While the stream is
up, ``send_endpoints`` reports a change of the node's underlay addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import grpc
from nacl.public import PrivateKey

from meshd import __version__
from meshd.errors import MeshdError, NodeRevoked
from meshd.peermap import PeerMapCopy, VersionGap
from meshd.state import Identity
from runmesh.challenge import answer_challenge
from runmesh.v1 import mesh_pb2, mesh_pb2_grpc, node_pb2
from runmesh.wgkey import encode_key

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
        keepalive_interval: float = 25.0,
    ) -> None:
        self._identity = identity
        self._key = private_key
        self._map = peer_map
        self._on_map = on_map
        self._endpoints = endpoints
        self._listen_port = listen_port
        self._keepalive_interval = keepalive_interval
        self._write_lock = asyncio.Lock()
        self._call: Call | None = None
        # Set once the first map or resume delta of this stream is applied.
        self.synced = asyncio.Event()
        # "full_map" or "resume": how the coordinator opened this stream.
        self.first_message: str | None = None

    async def run(self, channel: grpc.aio.Channel) -> None:
        """Hold the stream until it ends; raises NodeRevoked if revoked."""
        call: Call = mesh_pb2_grpc.MeshServiceStub(channel).Sync()
        keepalive = asyncio.create_task(self._send_keepalives(call))
        try:
            hello = Hello(self._map.version, self._endpoints, self._listen_port)
            await handshake(call, self._identity, self._key, hello)
            self._call = call
            await self._receive(call)
        finally:
            self._call = None
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keepalive
            call.cancel()

    async def send_endpoints(self, endpoints: list[str]) -> bool:
        """Report new underlay endpoints; False if the stream is not up."""
        call = self._call
        if call is None:
            return False
        update = mesh_pb2.EndpointUpdate(
            endpoints=endpoints, listen_port=self._listen_port
        )
        await self._write(call, mesh_pb2.NodeMessage(endpoints=update))
        return True

    async def _receive(self, call: Call) -> None:
        while True:
            message = await read_message(call)
            if message is None:
                return
            kind = message.WhichOneof("kind")
            if kind == "full_map":
                self._map.replace(message.full_map)
                await self._on_map()
                self._note_synced("full_map")
            elif kind == "delta":
                await self._apply_delta(call, message.delta)
                self._note_synced("resume")
            elif kind == "revoked":
                raise NodeRevoked(
                    f"the coordinator revoked this node: {message.revoked.reason}"
                )
            elif kind == "reconnect":
                raise ReconnectRequested(
                    message.reconnect.reason, message.reconnect.retry_within_ms
                )

    def _note_synced(self, kind: str) -> None:
        if self.first_message is None:
            self.first_message = kind
        self.synced.set()

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


@dataclass(frozen=True)
class Hello:
    """What a hello says besides the proof of the key."""

    last_version: int
    endpoints: list[str]
    listen_port: int


async def handshake(
    call: Call, identity: Identity, key: PrivateKey, hello: Hello
) -> bytes:
    """Read the challenge, check the server, send the hello; returns the nonce.

    The hello names the public key of `key` (not node.json's copy of it),
    so a node.json left behind by an interrupted rotation cannot make the
    proof and the claimed key disagree.
    """
    first = await read_message(call)
    if first is None or first.WhichOneof("kind") != "challenge":
        raise MeshdError("the coordinator did not open with a challenge")
    challenge = first.challenge
    expected = identity.coordinator_public_key
    if not secrets.compare_digest(challenge.coordinator_public_key, expected):
        raise CoordinatorMismatch(
            "the server's key differs from the coordinator this node linked with"
        )
    message = mesh_pb2.Hello(
        public_key=encode_key(bytes(key.public_key)),
        challenge_answer=answer_challenge(key, expected, challenge.nonce),
        last_version=hello.last_version,
        endpoints=hello.endpoints,
        listen_port=hello.listen_port,
        meshd_version=__version__,
    )
    await call.write(mesh_pb2.NodeMessage(hello=message))
    return bytes(challenge.nonce)


async def read_message(call: Call) -> mesh_pb2.CoordinatorMessage | None:
    """The next message, or None at the end of the stream."""
    message = await call.read()
    if message is grpc.aio.EOF:
        return None
    return cast(mesh_pb2.CoordinatorMessage, message)

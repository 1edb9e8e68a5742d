"""A minimal simulated node for operational tests: link, approve, hold Sync.

It answers the challenge with a real key and applies maps with meshd's own
PeerMapCopy, so what it holds is what a real node would hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import grpc
from nacl.public import PrivateKey

from meshd.peermap import PeerMapCopy, VersionGap
from runmesh.challenge import answer_challenge
from runmesh.v1 import admin_pb2, admin_pb2_grpc, mesh_pb2, mesh_pb2_grpc
from runmesh.wgkey import encode_key


@dataclass
class SimNode:
    key: PrivateKey
    node_id: str = ""
    reconnects: int = 0
    kinds: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def public_key(self) -> str:
        return encode_key(bytes(self.key.public_key))

    def __post_init__(self) -> None:
        self.map = PeerMapCopy(self.public_key)
        self.synced = asyncio.Event()


async def link(channel: grpc.aio.Channel, api_key: str, label: str) -> SimNode:
    node = SimNode(PrivateKey.generate())
    mesh = mesh_pb2_grpc.MeshServiceStub(channel)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    started = await mesh.StartLink(
        mesh_pb2.StartLinkRequest(public_key=node.public_key, device_label=label),
        timeout=10,
    )
    approved = await admin.ApproveLink(
        admin_pb2.ApproveLinkRequest(code=started.code),
        metadata=(("authorization", f"Bearer {api_key}"),),
        timeout=10,
    )
    node.node_id = approved.id
    return node


async def hold(node: SimNode, targets: list[str]) -> None:
    """Hold a stream, moving to the next target whenever one ends."""
    attempt = 0
    while True:
        target = targets[attempt % len(targets)]
        attempt += 1
        with contextlib.suppress(grpc.aio.AioRpcError):
            async with grpc.aio.insecure_channel(target) as channel:
                await _stream(node, channel)
        node.reconnects += 1
        await asyncio.sleep(0.2)


async def _stream(node: SimNode, channel: grpc.aio.Channel) -> None:
    call = mesh_pb2_grpc.MeshServiceStub(channel).Sync()
    first = await call.read()
    challenge = first.challenge
    hello = mesh_pb2.Hello(
        public_key=node.public_key,
        challenge_answer=answer_challenge(
            node.key, challenge.coordinator_public_key, challenge.nonce
        ),
        last_version=node.map.version,
    )
    await call.write(mesh_pb2.NodeMessage(hello=hello))
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        kind = message.WhichOneof("kind")
        node.kinds.append(kind)
        if kind == "full_map":
            node.map.replace(message.full_map)
            node.synced.set()
        elif kind == "delta":
            try:
                node.map.apply(message.delta)
                node.synced.set()
            except VersionGap:
                await call.write(mesh_pb2.NodeMessage(resync=mesh_pb2.ResyncRequest()))
        elif kind in ("reconnect", "revoked"):
            return

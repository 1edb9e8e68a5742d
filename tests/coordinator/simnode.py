"""Simulated nodes against a real coordinator process, for the stream tests.

A ``SimNode`` is a device as meshd is one, minus WireGuard: a real X25519
key, the real link flow (StartLink, ApproveLink, PollLink), the real
challenge answer, and a Sync stream held by a background task that applies
full maps and deltas with meshd's own ``PeerMapCopy`` and asks for a full
map on a ``VersionGap``, as ``meshd.session`` does. It records every
message it is sent, so tests can check what the coordinator did, and it can
leave in every way a node leaves: a clean end, a dropped connection, a
silence, a pause in reading.

``Admin`` holds the operator's side (an API key of one org) and reads the
coordinator's truth: ``GetNodeConfig`` for each node's peers and
``ListNodes`` for names and presence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import itertools
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from nacl.public import PrivateKey

from meshd.peermap import PeerMapCopy, VersionGap
from runmesh.challenge import answer_challenge
from runmesh.v1 import admin_pb2, admin_pb2_grpc, mesh_pb2, mesh_pb2_grpc, node_pb2

RPC_TIMEOUT = 10.0
SyncCall = grpc.aio.StreamStreamCall[mesh_pb2.NodeMessage, mesh_pb2.CoordinatorMessage]
_stream_numbers = itertools.count(1)


def public_key_of(private_key: PrivateKey) -> str:
    return base64.b64encode(bytes(private_key.public_key)).decode()


# ---- what a map says about a peer, as both sides can state it ----


@dataclass(frozen=True)
class PeerView:
    public_key: str
    name: str
    allowed_ips: tuple[str, ...]
    endpoint: str
    online: bool


def view_of_peer(peer: node_pb2.Peer) -> PeerView:
    return PeerView(
        public_key=peer.public_key,
        name=peer.name,
        allowed_ips=tuple(sorted(peer.allowed_ips)),
        endpoint=peer.endpoints[0] if peer.endpoints else "",
        online=peer.online,
    )


@dataclass(frozen=True)
class NodeTruth:
    """What the coordinator says one node's map should hold."""

    name: str
    addresses: tuple[str, ...]
    peers: dict[str, PeerView]


def overlapping_peers(peers: Iterable[node_pb2.Peer]) -> list[tuple[str, str]]:
    """Pairs of peers (by key) whose allowed IPs overlap."""
    owned: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    clashes: list[tuple[str, str]] = []
    for peer in peers:
        for cidr in peer.allowed_ips:
            network = ipaddress.ip_network(cidr, strict=False)
            for key, other in owned:
                if key != peer.public_key and network.overlaps(other):  # type: ignore[arg-type]
                    clashes.append((key, peer.public_key))
            owned.append((peer.public_key, network))
    return clashes


# ---- the operator ----


class Admin:
    """AdminService calls with one org's API key, on a channel of its own."""

    def __init__(self, target: str, api_key: str) -> None:
        self.target = target
        self.auth = (("authorization", f"Bearer {api_key}"),)
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        return self._channel

    async def reset(self) -> None:
        """A new channel (after a coordinator restart: no reconnect backoff)."""
        if self._channel is not None:
            await self._channel.close()
        self._channel = None

    async def close(self) -> None:
        await self.reset()

    @property
    def admin(self) -> Any:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    @property
    def mesh(self) -> Any:
        return mesh_pb2_grpc.MeshServiceStub(self.channel)

    async def link(self, label: str = "device", name: str = "") -> Linked:
        """StartLink, ApproveLink and PollLink, as a device and a member do."""
        private_key = PrivateKey.generate()
        key = public_key_of(private_key)
        started = await self.mesh.StartLink(
            mesh_pb2.StartLinkRequest(public_key=key, device_label=label),
            timeout=RPC_TIMEOUT,
        )
        await self.admin.ApproveLink(
            admin_pb2.ApproveLinkRequest(code=started.code, name=name),
            metadata=self.auth,
            timeout=RPC_TIMEOUT,
        )
        polled = await self.mesh.PollLink(
            mesh_pb2.PollLinkRequest(code=started.code, public_key=key),
            timeout=RPC_TIMEOUT,
        )
        assert polled.status == mesh_pb2.LINK_STATUS_APPROVED, polled
        return Linked(private_key, polled.node, polled.coordinator.public_key)

    async def rename(self, node_id: str, name: str) -> node_pb2.Node:
        return await self.admin.RenameNode(
            admin_pb2.RenameNodeRequest(id=node_id, name=name),
            metadata=self.auth,
            timeout=RPC_TIMEOUT,
        )

    async def revoke(self, node_id: str) -> node_pb2.Node:
        return await self.admin.RevokeNode(
            admin_pb2.RevokeNodeRequest(id=node_id),
            metadata=self.auth,
            timeout=RPC_TIMEOUT,
        )

    async def nodes(self, include_revoked: bool = False) -> list[node_pb2.Node]:
        found: list[node_pb2.Node] = []
        cursor = ""
        while True:
            page = await self.admin.ListNodes(
                admin_pb2.ListNodesRequest(
                    limit=500, cursor=cursor, include_revoked=include_revoked
                ),
                metadata=self.auth,
                timeout=RPC_TIMEOUT,
            )
            found.extend(page.nodes)
            if not page.has_more:
                return found
            cursor = page.next_cursor

    async def config(self, node_id: str) -> admin_pb2.NodeConfig:
        return await self.admin.GetNodeConfig(
            admin_pb2.GetNodeRequest(id=node_id),
            metadata=self.auth,
            timeout=RPC_TIMEOUT,
        )

    async def truth(self, node_ids: Sequence[str]) -> dict[str, NodeTruth]:
        """Each node's map as the coordinator states it: GetNodeConfig's
        peers, with names and presence from ListNodes."""
        listed = {n.id: n for n in await self.nodes()}
        found: dict[str, NodeTruth] = {}
        for node_id in node_ids:
            config = await self.config(node_id)
            peers = {
                p.public_key: PeerView(
                    public_key=p.public_key,
                    name=p.name,
                    allowed_ips=tuple(sorted(p.allowed_ips)),
                    endpoint=p.endpoint,
                    online=listed[p.node_id].status == node_pb2.NODE_STATUS_ONLINE,
                )
                for p in config.peers
            }
            found[node_id] = NodeTruth(
                name=listed[node_id].name,
                addresses=tuple(config.addresses),
                peers=peers,
            )
        return found


@dataclass
class Linked:
    private_key: PrivateKey
    node: node_pb2.Node
    coordinator_key: str


def mesh_version(db_path: str, org_id: str) -> int:
    """The org's mesh version as the database holds it (read-only)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    ) as db:
        row = db.execute(
            "SELECT mesh_version FROM orgs WHERE id = ?", (org_id,)
        ).fetchone()
    assert row is not None, org_id
    return int(row[0])


def db_path_of(db_url: str) -> str:
    assert db_url.startswith("sqlite:///"), db_url
    return db_url.removeprefix("sqlite:///")


# ---- the node ----


@dataclass
class Received:
    stream: int
    at: float
    kind: str
    message: mesh_pb2.CoordinatorMessage


@dataclass
class StreamEnd:
    stream: int
    code: grpc.StatusCode | None
    revoked: bool
    how: str  # "eof", "error", "dropped", "closed"


@dataclass
class _Snapshot:
    version: int
    name: str
    addresses: list[str]
    peers: dict[str, node_pb2.Peer]


class SimNode:
    """One simulated meshd: a key, a map copy and at most one live stream."""

    def __init__(
        self,
        target: str,
        linked: Linked,
        keepalive: float = 0.3,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.private_key = linked.private_key
        self.node = linked.node
        self.coordinator_key = linked.coordinator_key
        self.keepalive = keepalive
        self.channel_options = list(channel_options)
        self.copy = PeerMapCopy(self.public_key)
        self.received: list[Received] = []
        self.ends: list[StreamEnd] = []
        # (stream, why) for every delta that did not follow the map held.
        self.gaps: list[tuple[int, str]] = []
        # The version each map or delta brought the node to, in order.
        self.versions: list[int] = []
        self.history: dict[int, _Snapshot] = {}
        self.stream_no = 0
        self.revoked = False
        self.send_keepalives = True
        self._channel: grpc.aio.Channel | None = None
        self._call: SyncCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._keepalives: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self.last_message_at = 0.0  # monotonic, keepalives excluded

    @property
    def public_key(self) -> str:
        return public_key_of(self.private_key)

    def __repr__(self) -> str:
        return f"SimNode({self.node.name}, v{self.copy.version})"

    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    # ---- connecting ----

    async def connect(
        self,
        last_version: int | None = None,
        endpoints: Sequence[str] = (),
        listen_port: int = 0,
        restore: bool = True,
        update_after_hello: Sequence[str] = (),
    ) -> mesh_pb2.CoordinatorMessage:
        """Open Sync and apply the first message; returns that message.

        ``last_version`` defaults to the version held (a resume). A lower
        one is a node that lost its newer state: when ``restore`` is set
        and the node once held that version, its copy goes back to what it
        held then, as a restored ``map.json`` would. ``update_after_hello``:
        endpoints sent in an EndpointUpdate right behind the hello, before
        the first map has arrived (as meshd may). Raises
        ``grpc.aio.AioRpcError`` when the coordinator refuses the stream.
        """
        assert not self.connected, "already holds a stream"
        if last_version is None:
            last_version = self.copy.version
        elif restore and last_version in self.history:
            self._restore(self.history[last_version])
        self.stream_no = next(_stream_numbers)
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[("grpc.max_receive_message_length", 64 << 20)]
            + self.channel_options,
        )
        call: SyncCall = mesh_pb2_grpc.MeshServiceStub(self._channel).Sync()
        self._call = call
        first = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
        assert first is not grpc.aio.EOF, "the stream ended before the challenge"
        assert first.WhichOneof("kind") == "challenge", first
        challenge = first.challenge
        assert challenge.coordinator_public_key == self.coordinator_key
        hello = mesh_pb2.Hello(
            public_key=self.public_key,
            challenge_answer=answer_challenge(
                self.private_key, challenge.coordinator_public_key, challenge.nonce
            ),
            last_version=last_version,
            endpoints=list(endpoints),
            listen_port=listen_port,
            meshd_version="simnode",
        )
        await self._write(call, mesh_pb2.NodeMessage(hello=hello))
        if update_after_hello:
            update = mesh_pb2.EndpointUpdate(
                endpoints=list(update_after_hello), listen_port=listen_port
            )
            await self._write(call, mesh_pb2.NodeMessage(endpoints=update))
        try:
            message = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            self.ends.append(StreamEnd(self.stream_no, error.code(), False, "error"))
            await self._close_channel()
            raise
        assert message is not grpc.aio.EOF, "the stream ended before the first map"
        await self._take(call, self.stream_no, message)
        self._reader = asyncio.create_task(self._read(call, self.stream_no))
        self._keepalives = asyncio.create_task(self._send_keepalives(call))
        return message

    def _restore(self, snapshot: _Snapshot) -> None:
        self.copy.version = snapshot.version
        self.copy.name = snapshot.name
        self.copy.addresses = list(snapshot.addresses)
        self.copy.peers = copy.deepcopy(snapshot.peers)

    # ---- the stream ----

    async def _read(self, call: SyncCall, stream: int) -> None:
        how, code = "eof", None
        try:
            while True:
                await self._reading.wait()
                message = await call.read()
                if message is grpc.aio.EOF:
                    code = await call.code()
                    break
                await self._take(call, stream, message)
        except grpc.aio.AioRpcError as error:
            how, code = "error", error.code()
        except asyncio.CancelledError:
            if not call.cancelled():
                raise
            how = "dropped"
        finally:
            self.ends.append(StreamEnd(stream, code, self.revoked, how))
            if self._keepalives is not None:
                self._keepalives.cancel()
            async with self._changed:
                self._changed.notify_all()

    async def _take(
        self, call: SyncCall, stream: int, message: mesh_pb2.CoordinatorMessage
    ) -> None:
        kind = message.WhichOneof("kind") or ""
        now = time.monotonic()
        self.received.append(Received(stream, now, kind, message))
        if kind != "keepalive":
            self.last_message_at = now
        if kind == "full_map":
            self.copy.replace(message.full_map)
            self._applied()
        elif kind == "delta":
            try:
                self.copy.apply(message.delta)
            except VersionGap as gap:
                self.gaps.append((stream, str(gap)))
                request = mesh_pb2.ResyncRequest(reason=str(gap))
                with contextlib.suppress(
                    grpc.aio.AioRpcError,
                    grpc.aio.UsageError,
                    asyncio.InvalidStateError,
                ):
                    await self._write(call, mesh_pb2.NodeMessage(resync=request))
            else:
                self._applied()
        elif kind == "revoked":
            self.revoked = True
        async with self._changed:
            self._changed.notify_all()

    def _applied(self) -> None:
        self.versions.append(self.copy.version)
        self.history[self.copy.version] = _Snapshot(
            self.copy.version,
            self.copy.name,
            list(self.copy.addresses),
            copy.deepcopy(self.copy.peers),
        )

    async def _send_keepalives(self, call: SyncCall) -> None:
        with contextlib.suppress(
            grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError
        ):
            while True:
                await asyncio.sleep(self.keepalive)
                if not self.send_keepalives:
                    continue
                keepalive = mesh_pb2.Keepalive()
                keepalive.sent_at.GetCurrentTime()
                await self._write(call, mesh_pb2.NodeMessage(keepalive=keepalive))

    async def _write(self, call: SyncCall, message: mesh_pb2.NodeMessage) -> None:
        async with self._write_lock:  # grpc.aio allows one write at a time
            await call.write(message)

    # ---- reading control ----

    def pause_reading(self) -> None:
        """Stop taking messages (a consumer that fell behind); the read
        already in flight, if any, still completes."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    async def wait_for(self, predicate: Any, timeout: float = RPC_TIMEOUT) -> None:
        """Wait until ``predicate()`` holds, re-checked after every message."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_ended(self, timeout: float = RPC_TIMEOUT) -> StreamEnd:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.ends[-1]

    # ---- leaving ----

    async def disconnect(self) -> StreamEnd | None:
        """End the stream as meshd does: half-close, then read to the end."""
        if self._call is None or self._reader is None:
            return None
        self.resume_reading()
        await self._stop_keepalives()
        if not self._reader.done():
            with contextlib.suppress(
                grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError
            ):
                await self._call.done_writing()
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), RPC_TIMEOUT)
            except TimeoutError:
                self._call.cancel()
                await self._reader
        await self._close_channel()
        return self.ends[-1] if self.ends else None

    async def drop(self) -> None:
        """Lose the stream without a clean end (the call is cancelled and
        the connection closed, as when a laptop lid closes)."""
        if self._call is None:
            return
        self.resume_reading()
        self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._close_channel()

    async def _stop_keepalives(self) -> None:
        if self._keepalives is not None:
            self._keepalives.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalives
        self._keepalives = None

    async def _close_channel(self) -> None:
        await self._stop_keepalives()
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._call = None

    async def close(self) -> None:
        await self.drop()

    # ---- checks ----

    def applied_view(self) -> dict[str, PeerView]:
        return {
            key: view_of_peer(peer)
            for key, peer in self.copy.peers.items()
            if key != self.public_key
        }

    def sent_versions(self) -> list[int]:
        """The version every map or delta the coordinator sent brings the
        node to, in order, across all streams."""
        found = []
        for item in self.received:
            if item.kind == "full_map":
                found.append(item.message.full_map.version)
            elif item.kind == "delta":
                found.append(item.message.delta.version)
        return found

    def kinds(self, stream: int | None = None) -> list[str]:
        return [
            r.kind
            for r in self.received
            if r.kind != "keepalive" and (stream is None or r.stream == stream)
        ]


@dataclass
class Quiet:
    version: int
    truth: dict[str, NodeTruth]
    waited: float = 0.0
    lagging: list[str] = field(default_factory=list)


async def quiet_point(
    admin: Admin,
    db_path: str,
    org_id: str,
    nodes: Sequence[SimNode],
    quiet: float = 0.3,
    timeout: float = 10.0,
) -> Quiet:
    """Wait until the coordinator's version is stable, every connected node
    holds it and no node was sent anything for ``quiet`` seconds; returns
    that version and the coordinator's truth, read at that version."""
    started = time.monotonic()
    deadline = started + timeout
    lagging: list[str] = []
    while time.monotonic() < deadline:
        version = mesh_version(db_path, org_id)
        connected = [n for n in nodes if n.connected]
        lagging = [
            f"{n.node.name}@{n.copy.version}"
            for n in connected
            if n.copy.version != version
        ]
        now = time.monotonic()
        if not lagging and all(now - n.last_message_at >= quiet for n in connected):
            truth = await admin.truth([n.node_id for n in connected])
            if mesh_version(db_path, org_id) == version and all(
                n.copy.version == version for n in connected
            ):
                return Quiet(version, truth, time.monotonic() - started)
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"no quiet point within {timeout}s: coordinator at "
        f"{mesh_version(db_path, org_id)}, lagging nodes {lagging}"
    )


def map_mismatches(node: SimNode, truth: NodeTruth) -> list[str]:
    """How a node's applied map differs from the coordinator's truth."""
    problems = []
    applied = node.applied_view()
    for key in sorted(set(applied) | set(truth.peers)):
        mine, theirs = applied.get(key), truth.peers.get(key)
        if mine != theirs:
            problems.append(f"peer {key[:8]}: node has {mine}, coordinator {theirs}")
    if node.copy.name != truth.name:
        problems.append(f"own name: node has {node.copy.name!r}, truth {truth.name!r}")
    if tuple(node.copy.addresses) != truth.addresses:
        problems.append(
            f"addresses: node has {node.copy.addresses}, truth {truth.addresses}"
        )
    return problems


def backwards(versions: Sequence[int]) -> list[tuple[int, int]]:
    """Neighbouring pairs where the version went down."""
    return [(a, b) for a, b in itertools.pairwise(versions) if b < a]


class MeshOrg:
    """One org of a running coordinator: its operator and its nodes."""

    def __init__(self, target: str, db_url: str, api_key: str) -> None:
        self.target = target
        self.db_path = db_path_of(db_url)
        self.admin = Admin(target, api_key)
        self.nodes: list[SimNode] = []
        self.org_id = ""

    async def join(
        self, label: str = "device", name: str = "", **node_options: Any
    ) -> SimNode:
        """Link and approve a new node (not yet connected)."""
        linked = await self.admin.link(label, name)
        self.org_id = linked.node.org_id
        node = SimNode(self.target, linked, **node_options)
        self.nodes.append(node)
        return node

    def twin(self, node: SimNode, **node_options: Any) -> SimNode:
        """A second process holding the same node's key (another stream)."""
        linked = Linked(node.private_key, node.node, node.coordinator_key)
        twin = SimNode(self.target, linked, **node_options)
        self.nodes.append(twin)
        return twin

    def version(self) -> int:
        return mesh_version(self.db_path, self.org_id)

    async def quiet(
        self, nodes: Sequence[SimNode] | None = None, timeout: float = 10.0
    ) -> Quiet:
        return await quiet_point(
            self.admin,
            self.db_path,
            self.org_id,
            self.nodes if nodes is None else nodes,
            timeout=timeout,
        )

    async def status(self, node: SimNode) -> int:
        listed = await self.admin.nodes(include_revoked=True)
        return next(n.status for n in listed if n.id == node.node_id)

    async def wait_status(
        self, node: SimNode, status: int, timeout: float = RPC_TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while (now := await self.status(node)) != status:
            assert time.monotonic() < deadline, (
                f"{node.node.name} still {node_pb2.NodeStatus.Name(now)}"
            )
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.close()
        await self.admin.close()

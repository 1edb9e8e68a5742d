"""A simulated fleet: real nodes in worker processes, against a coordinator.

The parent process starts the coordinator (``bench.services``) and a few
worker processes (spawned, so every channel is created after the
process starts). Each worker holds a share of the nodes: real X25519 keys,
links through StartLink -> ApproveLink -> PollLink, and Sync streams that
answer the challenge, resume with their last version and apply every map
and delta with ``meshd.peermap.PeerMapCopy``.

Memory forces one compromise. A full map of 10,000 peers held in a
PeerMapCopy costs about 6 MiB in Python, so 10,000 such copies do not fit
on one machine. The first ``verify`` nodes of the fleet (spread over the
workers) keep a complete PeerMapCopy whose peer set is compared with the
coordinator's truth; every other node parses every message in full and
applies it with the same PeerMapCopy version rules (``LightCopy``) but does
not keep the peers.

A timed fan-out round (``watch``, then ``collect``) is the one place a
node does not apply a message at once: the watched delta is noted and
searched when read() returns it, as the floor's clients do with theirs,
and applied, in order, once the round is collected. Hundreds of nodes
share one process and one CPU here; applying at once would make every node
wait for the applies of the nodes read before it, a cost the floor's
clients do not pay and that real nodes, each on its own machine, never
impose on each other.

The parent talks to the workers with small commands over pipes (see
``Worker._handle``); every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import multiprocessing
import multiprocessing.connection
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from nacl.public import PrivateKey

from bench import flags, floor, placement, services
from bench.services import Coordinator
from coordinator.collector import YOUNG_THRESHOLD
from coordinator.hub import BURST_WRITES_PER_SECOND
from meshd.backoff import Backoff
from meshd.channel import CHANNEL_OPTIONS
from meshd.peermap import PeerMapCopy, VersionGap
from runmesh.challenge import answer_challenge
from runmesh.v1 import admin_pb2, admin_pb2_grpc, mesh_pb2, mesh_pb2_grpc, node_pb2

T = TypeVar("T")

SYNC_METHOD = "/runmesh.v1.MeshService/Sync"

# meshd opens a fresh channel for every attempt, so it reconnects as soon as
# its Backoff says; the bench shares a channel among many nodes, so the
# channel's own reconnect backoff (1 s growing to 120 s by default) is kept
# short to leave the pacing to Backoff, as in meshd.
BENCH_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    *CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # One channel per entry: without this, channels with equal arguments
    # share one subchannel (one TCP connection) inside a process.
    ("grpc.use_local_subchannel_pool", 1),
]


# ------------------------------------------------------------ admin client


def admin_metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@dataclasses.dataclass
class Identity:
    node_id: str
    name: str
    public_key: str
    private_key: bytes
    coordinator_key: str


def start_request(name: str, public_key: str) -> mesh_pb2.StartLinkRequest:
    """What a simulated device sends to start its link."""
    return mesh_pb2.StartLinkRequest(
        public_key=public_key,
        device_label=name,
        os="linux",
        app_version="bench",
        hostname=name,
    )


async def link_node(
    mesh: mesh_pb2_grpc.MeshServiceStub,
    admin: admin_pb2_grpc.AdminServiceStub,
    admin_key: str,
    name: str,
    approved: Callable[[], None] | None = None,
) -> Identity:
    """StartLink -> ApproveLink -> PollLink, as a device and a member would."""
    private = PrivateKey.generate()
    public = _b64(bytes(private.public_key))
    started = await mesh.StartLink(start_request(name, public), timeout=60)
    await admin.ApproveLink(
        admin_pb2.ApproveLinkRequest(code=started.code, name=name),
        metadata=admin_metadata(admin_key),
        timeout=60,
    )
    if approved is not None:
        approved()
    for _ in range(20):
        try:
            polled = await mesh.PollLink(
                mesh_pb2.PollLinkRequest(code=started.code, public_key=public),
                timeout=60,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(1.0)
            continue
        if polled.status == mesh_pb2.LINK_STATUS_APPROVED:
            return Identity(
                polled.node.id,
                name,
                public,
                bytes(private),
                polled.coordinator.public_key,
            )
        await asyncio.sleep(1.0)
    raise RuntimeError(f"link of {name} never approved")


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


async def truth(admin: admin_pb2_grpc.AdminServiceStub, key: str) -> dict[str, str]:
    """Every active node of the org: public key -> name (AdminService.ListNodes)."""
    nodes: dict[str, str] = {}
    cursor = ""
    for _ in range(10_000):
        page = await admin.ListNodes(
            admin_pb2.ListNodesRequest(limit=500, cursor=cursor),
            metadata=admin_metadata(key),
            timeout=60,
        )
        nodes.update({n.public_key: n.name for n in page.nodes})
        if not page.has_more:
            return nodes
        cursor = page.next_cursor
    raise RuntimeError("ListNodes never ended")


async def node_names(coordinator: Coordinator) -> dict[str, str]:
    """``truth`` through a channel of its own, with the admin key."""
    async with open_channel(coordinator.target) as channel:
        return await truth(
            admin_pb2_grpc.AdminServiceStub(channel), coordinator.admin_key
        )


async def observe_full_map(
    channel: grpc.aio.Channel, ident: Identity, timeout: float = 60
) -> node_pb2.PeerMap:
    """Open one fresh Sync stream as ``ident`` and return its first full map."""
    call = _sync_call(channel)
    try:
        return await asyncio.wait_for(_first_full_map(call, ident), timeout)
    finally:
        call.cancel()


async def _first_full_map(call: Any, ident: Identity) -> node_pb2.PeerMap:
    first = mesh_pb2.CoordinatorMessage.FromString(await call.read())
    await call.write(_hello(ident, first.challenge.nonce, 0))
    message = mesh_pb2.CoordinatorMessage.FromString(await call.read())
    if message.WhichOneof("kind") != "full_map":
        raise RuntimeError(f"observer got {message.WhichOneof('kind')} first")
    return message.full_map


def _sync_call(channel: grpc.aio.Channel) -> Any:
    method = channel.stream_stream(
        SYNC_METHOD,
        request_serializer=mesh_pb2.NodeMessage.SerializeToString,
        response_deserializer=lambda raw: raw,  # keep the bytes: sizes are data
    )
    return method()


def _hello(ident: Identity, nonce: bytes, last_version: int) -> mesh_pb2.NodeMessage:
    answer = answer_challenge(
        PrivateKey(ident.private_key), ident.coordinator_key, nonce
    )
    return mesh_pb2.NodeMessage(
        hello=mesh_pb2.Hello(
            public_key=ident.public_key,
            challenge_answer=answer,
            last_version=last_version,
            meshd_version="bench",
        )
    )


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=BENCH_CHANNEL_OPTIONS)


# ------------------------------------------------------------ node in worker


class LightCopy(PeerMapCopy):
    """PeerMapCopy's version rules without keeping the peers (see module doc)."""

    def replace(self, full: node_pb2.PeerMap) -> None:
        self.version = full.version
        self.name = full.self.name
        self.peers = {}

    def apply(self, delta: node_pb2.PeerDelta) -> None:
        super().apply(delta)
        self.peers = {}


@dataclasses.dataclass(eq=False)
class _Linking:
    """A node on its way in: started, maybe approved, not yet polled."""

    name: str
    private_key: bytes
    public_key: str
    code: str
    approved: bool = False


@dataclasses.dataclass
class Creation:
    """What Fleet.create did, phase by phase."""

    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    done: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def created(self) -> int:
        return self.done.get("poll_links", 0)

    @property
    def approvals_per_s(self) -> float:
        return self.done["approve_links"] / self.seconds["approve_links"]

    @property
    def flows_per_s(self) -> float:
        return self.created / sum(self.seconds.values())


@dataclasses.dataclass(eq=False)
class SimNode:
    ident: Identity
    copy: PeerMapCopy
    channel_index: int
    call: Any = None
    up: bool = False
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    write_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    # counters since the last "mark"
    full_maps: int = 0
    resumed: int = 0
    deltas: int = 0
    gaps: int = 0
    streams_ended: int = 0
    synced_since_mark: bool = False
    last_message_at: float = 0.0
    watch_at: float = 0.0
    watch_bytes: int = 0
    watch_raw: bytes = b""
    # The watched delta of a timed round, not yet applied (see _one_stream).
    held: bytes = b""
    task: asyncio.Task[None] | None = None


class Worker:
    def __init__(
        self, conn: multiprocessing.connection.Connection, config: dict[str, Any]
    ):
        self.conn = conn
        self.index: int = config["index"]
        self.target: str = config["target"]
        self.admin_key: str = config["admin_key"]
        self.keepalive: float = config["keepalive"]
        self.verify: int = config["verify"]
        self.channels = [open_channel(self.target) for _ in range(config["channels"])]
        self.nodes: list[SimNode] = []
        self.linking: list[_Linking] = []
        self.watch_key = ""
        # Between "watch" and "collect": the watched delta is held (see
        # _one_stream).
        self.timing = False
        self.floors: dict[str, floor.FloorStreams] = {}  # by stream shape
        self.stopping = False

    # ---- command loop ----

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, self.conn.recv)
            if command == "exit":
                self.conn.send({"ok": True})
                return
            try:
                reply = await self._handle(command, *args)
            except Exception as exc:  # reported to the parent, which fails
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.conn.send(reply)

    async def _handle(self, command: str, *args: Any) -> dict[str, Any]:
        handler = getattr(self, f"cmd_{command}")
        result: dict[str, Any] = await handler(*args)
        return result

    # ---- creating nodes ----

    async def cmd_start_links(
        self, count: int, concurrency: int, prefix: str
    ) -> dict[str, Any]:
        """Phase 1 of creating nodes: a key and a StartLink for each."""

        async def start(lane: int, i: int) -> None:
            name = f"{prefix}w{self.index}n{i}"
            private = PrivateKey.generate()
            public = _b64(bytes(private.public_key))
            started = await self._mesh(lane).StartLink(
                start_request(name, public), timeout=60
            )
            self.linking.append(_Linking(name, bytes(private), public, started.code))

        self.linking = []
        return await self._in_lanes(range(count), concurrency, start)

    async def cmd_approve_links(self, concurrency: int) -> dict[str, Any]:
        """Phase 2: ApproveLink for every started link, as a member would."""

        async def approve(lane: int, link: _Linking) -> None:
            await self._admin(lane).ApproveLink(
                admin_pb2.ApproveLinkRequest(code=link.code, name=link.name),
                metadata=admin_metadata(self.admin_key),
                timeout=60,
            )
            link.approved = True

        return await self._in_lanes(list(self.linking), concurrency, approve)

    async def cmd_poll_links(self, concurrency: int) -> dict[str, Any]:
        """Phase 3: the device's PollLink, which hands it its node."""

        async def poll(lane: int, link: _Linking) -> None:
            polled = await self._mesh(lane).PollLink(
                mesh_pb2.PollLinkRequest(code=link.code, public_key=link.public_key),
                timeout=60,
            )
            if polled.status != mesh_pb2.LINK_STATUS_APPROVED:
                raise RuntimeError(f"link of {link.name} is not approved")
            self._add_node(
                Identity(
                    polled.node.id,
                    link.name,
                    link.public_key,
                    link.private_key,
                    polled.coordinator.public_key,
                )
            )

        approved = [link for link in self.linking if link.approved]
        reply = await self._in_lanes(approved, concurrency, poll)
        self.linking = []
        return reply

    def _mesh(self, lane: int) -> Any:
        return mesh_pb2_grpc.MeshServiceStub(self.channels[lane % len(self.channels)])

    def _admin(self, lane: int) -> Any:
        return admin_pb2_grpc.AdminServiceStub(self.channels[lane % len(self.channels)])

    async def _in_lanes(
        self,
        items: Iterable[T],
        concurrency: int,
        step: Callable[[int, T], Awaitable[None]],
    ) -> dict[str, Any]:
        """``step`` for every item, ``concurrency`` at a time, 3 tries each."""
        todo = iter(items)
        errors: Counter[str] = Counter()
        done = 0
        started = time.perf_counter()

        async def one_lane(lane: int) -> None:
            nonlocal done
            for item in todo:
                for _attempt in range(3):
                    try:
                        await step(lane, item)
                        done += 1
                        break
                    except grpc.aio.AioRpcError as exc:
                        errors[exc.code().name] += 1
                        await asyncio.sleep(0.2)

        await asyncio.wait_for(
            asyncio.gather(*(one_lane(k) for k in range(concurrency))), 3600
        )
        return {
            "done": done,
            "seconds": time.perf_counter() - started,
            "errors": dict(errors),
        }

    def _add_node(self, ident: Identity) -> None:
        global_index = len(self.nodes)
        keep = global_index < self.verify
        copy = (PeerMapCopy if keep else LightCopy)(ident.public_key)
        self.nodes.append(SimNode(ident, copy, global_index % len(self.channels)))

    async def cmd_export(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    **dataclasses.asdict(n.ident),
                    "private_key": n.ident.private_key.hex(),
                }
                for n in self.nodes
            ]
        }

    async def cmd_load(self, identities: list[dict[str, Any]]) -> dict[str, Any]:
        for raw in identities:
            self._add_node(
                Identity(**{**raw, "private_key": bytes.fromhex(raw["private_key"])})
            )
        return {"created": len(self.nodes), "seconds": 0.0, "errors": {}}

    async def cmd_ids(self) -> dict[str, Any]:
        return {"ids": [(n.ident.node_id, n.ident.public_key) for n in self.nodes]}

    # ---- streams ----

    async def cmd_connect(self, concurrency: int, timeout: float) -> dict[str, Any]:
        started = time.perf_counter()
        gate = asyncio.Semaphore(concurrency)
        for node in self.nodes:
            if node.task is None:
                node.task = asyncio.create_task(self._hold(node, gate))
        waits = asyncio.gather(*(n.ready.wait() for n in self.nodes))
        progress = asyncio.create_task(self._report_progress(started))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waits, timeout)
        finally:
            progress.cancel()
        return {
            "ready": sum(n.ready.is_set() for n in self.nodes),
            "seconds": time.perf_counter() - started,
        }

    async def _report_progress(self, started: float) -> None:
        """A line every 15 s on stderr: big fleets take minutes to connect."""
        while True:
            await asyncio.sleep(15)
            ready = sum(n.ready.is_set() for n in self.nodes)
            print(
                f"worker {self.index}: {ready}/{len(self.nodes)} streams ready "
                f"after {time.perf_counter() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    async def _hold(self, node: SimNode, gate: asyncio.Semaphore | None) -> None:
        """One node's connect-and-sync loop, reconnecting like meshd."""
        backoff = Backoff()
        while not self.stopping:
            try:
                await self._one_stream(node, gate)
            except grpc.aio.AioRpcError:
                pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted, then retried
                print(f"node {node.ident.name}: {exc!r}", file=sys.stderr)
            finally:
                if node.up:
                    node.streams_ended += 1
                node.up = False
                node.call = None
            gate = None  # only the first connect is paced by the gate
            await asyncio.sleep(backoff.next_delay())
            if node.synced_since_mark:
                backoff.reset()

    async def _one_stream(self, node: SimNode, gate: asyncio.Semaphore | None) -> None:
        keepalive: asyncio.Task[None] | None = None
        call: Any = None
        try:
            async with gate if gate is not None else contextlib.nullcontext():
                # The call starts (and the coordinator's hello timer with
                # it) when it is made: make it only once through the gate.
                call = node.call = _sync_call(self.channels[node.channel_index])
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                challenge = mesh_pb2.CoordinatorMessage.FromString(raw).challenge
                if node.held:
                    # The old stream's last delta: the hello names its version.
                    await self._apply_held(node)
                async with node.write_lock:
                    await call.write(
                        _hello(node.ident, challenge.nonce, node.copy.version)
                    )
                first = True
                raw = await call.read()
                received_at = time.time()
                if raw is grpc.aio.EOF:
                    return
                self._note_watched(node, raw, received_at)
                await self._on_message(node, raw, first)
                node.up = True
                node.ready.set()
            keepalive = asyncio.create_task(self._keepalives(node, call))
            while True:
                raw = await call.read()
                received_at = time.time()
                if raw is grpc.aio.EOF:
                    return
                if node.held:
                    await self._apply_held(node)
                if self._note_watched(node, raw, received_at):
                    # A timed round's delta: searched as the floor's
                    # clients do, applied once the round is collected.
                    # Applied now, it would delay the reads of the hundreds
                    # of nodes behind it in this process: a cost of packing
                    # nodes into one process that the floor's clients do
                    # not pay and a real node, on its own machine, does not
                    # impose on others.
                    node.held = raw
                    continue
                await self._on_message(node, raw, False)
        finally:
            if keepalive is not None:
                keepalive.cancel()
            if call is not None:
                call.cancel()

    def _note_watched(self, node: SimNode, raw: bytes, received_at: float) -> bool:
        """Whether ``raw`` is the first delta this node got in the round
        that adds the watched newcomer; if so its time and bytes are noted.
        The check is the floor's clients' (``floor.FloorStreams``): the
        same work on the same bytes."""
        if not self.timing or node.watch_at:
            return False
        message = mesh_pb2.CoordinatorMessage.FromString(raw)
        if not any(p.public_key == self.watch_key for p in message.delta.upserted):
            return False
        node.watch_at = received_at
        node.watch_bytes = len(raw)
        node.watch_raw = raw
        return True

    async def _apply_held(self, node: SimNode) -> None:
        raw, node.held = node.held, b""
        await self._on_message(node, raw, False)

    async def _on_message(self, node: SimNode, raw: bytes, first: bool) -> None:
        """Parse and apply one message."""
        message = mesh_pb2.CoordinatorMessage.FromString(raw)
        kind = message.WhichOneof("kind")
        if kind == "full_map":
            node.copy.replace(message.full_map)
            node.full_maps += 1
        elif kind == "delta":
            try:
                node.copy.apply(message.delta)
            except VersionGap:
                node.gaps += 1
                async with node.write_lock:
                    await node.call.write(
                        mesh_pb2.NodeMessage(
                            resync=mesh_pb2.ResyncRequest(reason="gap")
                        )
                    )
                return
            if first:
                node.resumed += 1
            else:
                node.deltas += 1
        elif kind == "revoked":
            self.stopping = True
        if kind in ("full_map", "delta"):
            node.last_message_at = time.time()
            if first:
                node.synced_since_mark = True

    async def _keepalives(self, node: SimNode, call: Any) -> None:
        await asyncio.sleep(random.uniform(0, self.keepalive))
        while True:
            message = mesh_pb2.Keepalive()
            message.sent_at.GetCurrentTime()
            async with node.write_lock:
                await call.write(mesh_pb2.NodeMessage(keepalive=message))
            await asyncio.sleep(self.keepalive)

    async def cmd_status(self) -> dict[str, Any]:
        nodes = self.nodes
        return {
            "nodes": len(nodes),
            "up": sum(n.up for n in nodes),
            "versions": dict(Counter(n.copy.version for n in nodes)),
            "synced_since_mark": sum(n.synced_since_mark for n in nodes),
            "full_maps": sum(n.full_maps for n in nodes),
            "resumed": sum(n.resumed for n in nodes),
            "deltas": sum(n.deltas for n in nodes),
            "gaps": sum(n.gaps for n in nodes),
            "streams_ended": sum(n.streams_ended for n in nodes),
            "last_message_at": max((n.last_message_at for n in nodes), default=0.0),
        }

    async def cmd_mark(self) -> dict[str, Any]:
        for n in self.nodes:
            n.full_maps = n.resumed = n.deltas = n.gaps = n.streams_ended = 0
            n.synced_since_mark = False
        return {"ok": True}

    async def cmd_delta_counts(self) -> dict[str, Any]:
        return {"deltas": [n.deltas for n in self.nodes]}

    async def cmd_watch(self, key: str) -> dict[str, Any]:
        settle_garbage()
        self.watch_key = key
        self.timing = True
        for n in self.nodes:
            n.watch_at = 0.0
            n.watch_bytes = 0
            n.watch_raw = b""
        return {"ok": True}

    async def cmd_collect(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.watch_at for n in self.nodes):
                break
            await asyncio.sleep(0.05)
        # The round is over: what a node holds is applied, and a delta that
        # comes after this (to a node that missed the round) at once. The
        # key stays: the floors' rounds that follow look for it.
        self.timing = False
        for node in self.nodes:
            if node.held:
                await self._apply_held(node)
        seen = [n for n in self.nodes if n.watch_at]
        return {
            "times": [n.watch_at for n in seen],
            "bytes": sorted({n.watch_bytes for n in seen}),
            # One copy of the delta as sent, for the floor to push.
            "raw": seen[0].watch_raw if seen else b"",
            "missing": len(self.nodes) - len(seen),
        }

    async def cmd_verify(self, version: int, names: dict[str, str]) -> dict[str, Any]:
        """Compare every node's version, and the kept maps' peers, with the truth."""
        bad: list[str] = []
        checked = 0
        wanted = set(names)
        for node in self.nodes:
            if node.copy.version != version:
                bad.append(
                    f"{node.ident.name}: version {node.copy.version} != {version}"
                )
                continue
            if isinstance(node.copy, LightCopy):
                continue
            checked += 1
            own = node.ident.public_key
            if node.copy.peers.keys() != wanted - {own}:
                have = set(node.copy.peers)
                bad.append(
                    f"{node.ident.name}: {len(have - wanted)} extra, "
                    f"{len(wanted - {own} - have)} missing peers"
                )
                continue
            if node.copy.name != names.get(own):
                bad.append(f"{node.ident.name}: own name {node.copy.name!r}")
                continue
            wrong = [k for k, p in node.copy.peers.items() if p.name != names[k]]
            if wrong:
                bad.append(f"{node.ident.name}: {len(wrong)} peer names differ")
        return {"bad": len(bad), "sample": bad[:5], "maps_checked": checked}

    async def cmd_stop_streams(self) -> dict[str, Any]:
        self.stopping = True
        tasks = [n.task for n in self.nodes if n.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for n in self.nodes:
            n.task = None
        for channel in self.channels:
            await channel.close()
        # Free the maps before anything else is measured in this process.
        for n in self.nodes:
            n.copy.peers = {}
        return {"ok": True}

    # ---- the bare-grpc floor ----

    async def cmd_floor_open(
        self, shape: str, target: str, count: int, channels: int, timeout: float
    ) -> dict[str, Any]:
        """Open ``count`` floor streams of ``shape`` (see floor.FloorStreams);
        the new peer each round's message must carry is the watched key."""
        streams = floor.FloorStreams(
            [open_channel(target) for _ in range(channels)], shape
        )
        self.floors[shape] = streams
        streams.open(count, lambda: self.watch_key)
        deadline = time.monotonic() + timeout
        while streams.opened < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"opened": streams.opened}

    async def cmd_settle(self) -> dict[str, Any]:
        settle_garbage()
        return {"ok": True}

    async def cmd_floor_collect(
        self, shape: str, count: int, round_index: int, timeout: float
    ) -> dict[str, Any]:
        """The receive times of one round, once all ``count`` came (or timeout)."""
        streams = self.floors[shape]
        deadline = time.monotonic() + timeout
        while (
            len(streams.received(round_index)) < count and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        return {"times": list(streams.received(round_index))}

    async def cmd_floor_close(self) -> dict[str, Any]:
        for streams in self.floors.values():
            await streams.close()
        self.floors = {}
        return {"ok": True}


def settle_garbage() -> None:
    """Collect now and freeze what survives, before a timed round.

    A worker holds the maps of hundreds of nodes (a real node holds one),
    about a million objects; a collection of those in the middle of a
    round stalled every stream of that worker for 5-300 ms, which is the
    harness's cost, not the coordinator's. Young collections are made
    rarer for the same reason as in the coordinator (see
    coordinator.collector).
    """
    gc.collect()
    gc.freeze()


def worker_main(
    conn: multiprocessing.connection.Connection, config: dict[str, Any]
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def main() -> None:
        worker = Worker(conn, config)
        await worker.serve()

    asyncio.run(main())


# ------------------------------------------------------------ parent side


class Fleet:
    """The worker processes, driven from the parent."""

    def __init__(
        self,
        target: str,
        admin_key: str,
        workers: int,
        channels: int,
        verify: int,
        keepalive: float,
        cpus: frozenset[int] = frozenset(),
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for index in range(workers):
            parent, child = context.Pipe()
            share = verify // workers + (1 if index < verify % workers else 0)
            config = {
                "index": index,
                "target": target,
                "admin_key": admin_key,
                "keepalive": keepalive,
                "verify": share,
                "channels": channels,
            }
            proc = context.Process(
                target=worker_main, args=(child, config), daemon=True
            )
            with placement.starting_on(cpus):
                proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def call(
        self,
        command: str,
        per_worker: Sequence[tuple[Any, ...]] | None = None,
        timeout: float = 900,
        args: tuple[Any, ...] = (),
    ) -> list[dict[str, Any]]:
        """Send a command to every worker, wait (bounded) for every reply."""
        services.check_interrupted()
        for i, conn in enumerate(self.conns):
            conn.send((command, per_worker[i] if per_worker is not None else args))
        replies = []
        deadline = time.monotonic() + timeout
        for i, conn in enumerate(self.conns):
            left = deadline - time.monotonic()
            if not conn.poll(max(0.0, left)):
                raise TimeoutError(f"worker {i} did not answer {command} in {timeout}s")
            reply = conn.recv()
            if "error" in reply:
                raise RuntimeError(f"worker {i} {command}: {reply['error']}")
            replies.append(reply)
        return replies

    def split(self, total: int) -> list[int]:
        k = len(self.conns)
        return [total // k + (1 if i < total % k else 0) for i in range(k)]

    def create(self, total: int, concurrency: int, prefix: str) -> Creation:
        """N nodes through the real link flow, in three timed phases (all
        StartLinks, then all ApproveLinks, then all PollLinks), so the
        approvals' own rate is measured apart from the rest of the flow."""
        lanes = max(1, concurrency // len(self.conns))
        creation = Creation()
        phases = [
            ("start_links", [(n, lanes, prefix) for n in self.split(total)]),
            ("approve_links", [(lanes,)] * len(self.conns)),
            ("poll_links", [(lanes,)] * len(self.conns)),
        ]
        for command, per_worker in phases:
            started = time.perf_counter()
            replies = self.call(command, per_worker, timeout=3600)
            seconds = time.perf_counter() - started
            creation.seconds[command] = seconds
            creation.done[command] = sum(r["done"] for r in replies)
            for r in replies:
                creation.errors.update(r["errors"])
        return creation

    def save(self, coordinator: Coordinator, directory: Path) -> None:
        """Keep the database and the node keys for a later run (``--from-fleet``).

        The nodes were made through the real RPCs; a later run reuses them
        instead of linking them again. The database is copied with SQLite's
        online backup, a consistent snapshot while the coordinator runs.
        """
        import json
        import sqlite3

        identities = [i for r in self.call("export") for i in r["identities"]]
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "x.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        source = sqlite3.connect(coordinator.workdir / "x.db")
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        (directory / "identities.json").write_text(json.dumps(identities))
        (directory / "admin_key").write_text(coordinator.admin_key)

    def load(self, directory: Path) -> int:
        import json

        identities = json.loads((directory / "identities.json").read_text())
        shares = self.split(len(identities))
        chunks, start = [], 0
        for n in shares:
            chunks.append((identities[start : start + n],))
            start += n
        return sum(r["created"] for r in self.call("load", chunks, timeout=300))

    def status(self) -> dict[str, Any]:
        replies = self.call("status", timeout=120)
        merged: dict[str, Any] = {"versions": Counter()}
        for r in replies:
            merged["versions"].update(r["versions"])
            for key in (
                "nodes",
                "up",
                "synced_since_mark",
                "full_maps",
                "resumed",
                "deltas",
                "gaps",
                "streams_ended",
            ):
                merged[key] = merged.get(key, 0) + r[key]
            merged["last_message_at"] = max(
                merged.get("last_message_at", 0.0), r["last_message_at"]
            )
        return merged

    def wait_quiet(self, quiet: float, timeout: float) -> dict[str, Any]:
        """Until every node is up, all hold one version, and nothing arrived
        for ``quiet`` seconds (or ``timeout``).

        ``quiet`` is stretched to what the coordinator may hold back in a
        burst (one write per stream at BURST_WRITES_PER_SECOND), else a
        pause between two rounds of a long burst would pass for quiet.
        """
        nodes = self.status()["nodes"]
        quiet = max(quiet, nodes / BURST_WRITES_PER_SECOND + 2.0)
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            settled = (
                status["up"] == status["nodes"]
                and len(status["versions"]) == 1
                and time.time() - status["last_message_at"] > quiet
            )
            if settled or time.monotonic() > deadline:
                status["settled"] = settled
                return status
            time.sleep(0.5)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(("exit", ()))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def add_fleet_arguments(parser: Any, nodes: int) -> None:
    parser.add_argument("--nodes", type=flags.whole(1), default=nodes)
    parser.add_argument(
        "--workers",
        type=flags.whole(1),
        default=3,
        help="client processes holding the nodes",
    )
    parser.add_argument(
        "--channels",
        type=flags.whole(1),
        default=12,
        help="gRPC channels per client process",
    )
    parser.add_argument(
        "--verify",
        type=flags.whole(0),
        default=None,
        help="nodes keeping a full PeerMapCopy (default: all up to 1,000, else 300)",
    )
    parser.add_argument(
        "--create-concurrency",
        type=flags.whole(1),
        default=48,
        help="links in flight at once while creating nodes",
    )
    parser.add_argument(
        "--connect-concurrency",
        type=flags.whole(1),
        default=256,
        help="first stream set-ups in flight per client process",
    )
    parser.add_argument(
        "--keepalive",
        type=flags.seconds(0.5, 600),  # the coordinator's own range
        default=25.0,
        help="--keepalive of the coordinator and of the nodes",
    )
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="run the servers and the nodes on any CPU (by default the servers "
        "get half of the CPUs and the nodes the other half)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--save-fleet",
        type=Path,
        default=None,
        help="save the database and node keys here once the nodes are made",
    )
    parser.add_argument(
        "--from-fleet",
        type=flags.fleet_dir,
        default=None,
        help="reuse nodes saved by --save-fleet instead of linking",
    )


def setup(
    args: Any, stack: contextlib.ExitStack, extra: Sequence[str] = ()
) -> tuple[Coordinator, Fleet, int, float | None]:
    """Coordinator + fleet with N nodes: (coordinator, fleet, nodes, approvals/s)."""
    where = placement.choose(args.shared_cpus)
    coordinator = Coordinator(
        stack.workdir,  # type: ignore[attr-defined]
        ["--keepalive", str(args.keepalive), *extra],
        where,
    )
    if args.from_fleet is not None:
        admin_key = coordinator.adopt(args.from_fleet)
    else:
        admin_key = coordinator.create_key()
    # Registered before the start: an interrupt while it starts stops it too.
    stack.callback(coordinator.kill)
    coordinator.start()
    fleet = Fleet(
        coordinator.target,
        admin_key,
        args.workers,
        args.channels,
        verify_count(args),
        args.keepalive,
        where.nodes,
    )
    stack.callback(fleet.close)
    if args.from_fleet is not None:
        created = fleet.load(args.from_fleet)
        from bench.report import note

        note(f"loaded {created} nodes from {args.from_fleet}")
        return coordinator, fleet, created, None
    from bench.report import note

    note(f"creating {args.nodes} nodes ...")
    made = fleet.create(args.nodes, args.create_concurrency, "n")
    phases = " ".join(f"{k}={v:.1f}s" for k, v in made.seconds.items())
    note(
        f"created {made.created} ({phases}): {made.approvals_per_s:.0f} approvals/s, "
        f"{made.flows_per_s:.0f} whole link flows/s; errors={dict(made.errors)}"
    )
    if args.save_fleet is not None:
        fleet.save(coordinator, args.save_fleet)
        note(f"saved the fleet to {args.save_fleet}")
    return coordinator, fleet, made.created, made.approvals_per_s


def verify_count(args: Any) -> int:
    """Every node up to 1,000; beyond, 300 sampled nodes (each copy of a
    10,000-node map is 10,000 Peer objects in the client processes)."""
    if args.verify is not None:
        return int(args.verify)
    return args.nodes if args.nodes <= 1000 else 300

"""Sync streams against a real coordinator: who gets in, and what they are sent.

Each test links devices through the real MeshService and AdminService and
opens Sync as meshd would, answering the challenge with the device's key.
One coordinator process serves the whole module (start-up costs seconds);
each test gets an org of its own, so no test sees another's nodes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from domain_db import create_org_key
from nacl.public import PrivateKey
from support.processes import Coordinator, start_coordinator

from runmesh.challenge import answer_challenge
from runmesh.v1 import admin_pb2, admin_pb2_grpc, mesh_pb2, mesh_pb2_grpc, node_pb2

pytestmark = pytest.mark.anyio

READ_TIMEOUT = 5.0
_org_numbers = itertools.count(1)
SyncCall = grpc.aio.StreamStreamCall[mesh_pb2.NodeMessage, mesh_pb2.CoordinatorMessage]


@dataclass
class Device:
    private_key: PrivateKey
    node: node_pb2.Node | None = None
    coordinator_key: str = ""

    @property
    def public_key(self) -> str:
        return base64.b64encode(bytes(self.private_key.public_key)).decode()


@dataclass
class Stream:
    """An authenticated Sync stream and the version of the map it holds."""

    call: SyncCall
    full_map: node_pb2.PeerMap
    answer: bytes
    version: int = 0
    deltas: list[node_pb2.PeerDelta] = field(default_factory=list)
    # A read still in flight after a wait timed out. Cancelling a grpc.aio
    # read cancels the whole call, so a timed-out read is kept, not dropped.
    pending: asyncio.Task[object] | None = None

    async def read(self, timeout: float) -> mesh_pb2.CoordinatorMessage | None:
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.call.read())
        done, _ = await asyncio.wait({self.pending}, timeout=timeout)
        if not done:
            return None
        message, self.pending = self.pending.result(), None
        assert message is not grpc.aio.EOF, "the stream ended"
        return message  # type: ignore[return-value]

    async def next_message(self) -> mesh_pb2.CoordinatorMessage:
        """The next message that is not a keepalive."""
        while True:
            message = await self.read(READ_TIMEOUT)
            assert message is not None, f"no message within {READ_TIMEOUT}s"
            if message.WhichOneof("kind") != "keepalive":
                return message

    async def next_delta(self) -> node_pb2.PeerDelta:
        """The next delta, checked to apply to the version this stream holds."""
        message = await self.next_message()
        assert message.WhichOneof("kind") == "delta", message
        delta = message.delta
        assert delta.from_version == self.version, (delta, self.version)
        self.version = delta.version
        self.deltas.append(delta)
        return delta

    async def settle(self, quiet: float = 0.4) -> None:
        """Take the deltas that arrive until the stream is quiet (the
        presence changes of streams that just opened)."""
        while True:
            message = await self.read(quiet)
            if message is None:
                return
            if message.WhichOneof("kind") == "delta":
                assert message.delta.from_version == self.version
                self.version = message.delta.version

    async def delta_upserting(self, public_key: str) -> node_pb2.PeerDelta:
        while True:
            delta = await self.next_delta()
            if any(p.public_key == public_key for p in delta.upserted):
                return delta


class Mesh:
    """Clients of one coordinator, with an API key of its org."""

    def __init__(self, channel: grpc.aio.Channel, api_key: str) -> None:
        self.channel = channel
        self.node_service = mesh_pb2_grpc.MeshServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.auth = (("authorization", f"Bearer {api_key}"),)
        self.calls: list[SyncCall] = []

    async def link(self, label: str = "device") -> Device:
        """StartLink, ApproveLink and PollLink, as a device and a member do."""
        device = Device(PrivateKey.generate())
        started = await self.node_service.StartLink(
            mesh_pb2.StartLinkRequest(public_key=device.public_key, device_label=label),
            timeout=READ_TIMEOUT,
        )
        await self.admin.ApproveLink(
            admin_pb2.ApproveLinkRequest(code=started.code),
            metadata=self.auth,
            timeout=READ_TIMEOUT,
        )
        polled = await self.node_service.PollLink(
            mesh_pb2.PollLinkRequest(code=started.code, public_key=device.public_key),
            timeout=READ_TIMEOUT,
        )
        assert polled.status == mesh_pb2.LINK_STATUS_APPROVED
        device.node = polled.node
        device.coordinator_key = polled.coordinator.public_key
        return device

    async def revoke(self, device: Device) -> None:
        assert device.node is not None
        await self.admin.RevokeNode(
            admin_pb2.RevokeNodeRequest(id=device.node.id),
            metadata=self.auth,
            timeout=READ_TIMEOUT,
        )

    async def challenge(self) -> tuple[SyncCall, mesh_pb2.Challenge]:
        call: SyncCall = self.node_service.Sync()
        self.calls.append(call)
        with anyio.fail_after(READ_TIMEOUT):
            first = await call.read()
        assert first is not grpc.aio.EOF
        assert first.WhichOneof("kind") == "challenge", first
        return call, first.challenge

    async def hello(
        self,
        call: SyncCall,
        public_key: str,
        answer: bytes,
        endpoint: str = "",
    ) -> None:
        await call.write(
            mesh_pb2.NodeMessage(
                hello=mesh_pb2.Hello(
                    public_key=public_key,
                    challenge_answer=answer,
                    endpoints=[endpoint] if endpoint else [],
                    listen_port=int(endpoint.rpartition(":")[2]) if endpoint else 0,
                    meshd_version="test",
                )
            )
        )

    async def sync(self, device: Device, endpoint: str = "") -> Stream:
        """Open Sync, prove the key and read the first full map."""
        call, challenge = await self.challenge()
        answer = answer_challenge(
            device.private_key, challenge.coordinator_public_key, challenge.nonce
        )
        await self.hello(call, device.public_key, answer, endpoint)
        with anyio.fail_after(READ_TIMEOUT):
            message = await call.read()
        assert message is not grpc.aio.EOF, "the stream ended before the full map"
        assert message.WhichOneof("kind") == "full_map", message
        return Stream(call, message.full_map, answer, version=message.full_map.version)


async def refusal(call: grpc.aio.StreamStreamCall[Any, Any]) -> grpc.StatusCode:
    """Read the stream to its end and return the status it ended with."""
    with anyio.fail_after(READ_TIMEOUT):
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return await call.code()


async def hang_up(call: SyncCall) -> None:
    """End a stream as meshd does, and wait until the coordinator has closed it.

    A call merely cancelled may still complete after the test's event loop
    is gone, which grpc reports as an error in the next test.
    """
    if call.done():
        return
    with anyio.move_on_after(READ_TIMEOUT):
        try:
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass
        return
    call.cancel()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    service = start_coordinator(Path(tmp_path_factory.mktemp("coordinator")))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def admin_key(coordinator: Coordinator) -> str:
    """An admin key of a fresh org of the shared coordinator."""
    number = next(_org_numbers)
    return await create_org_key(coordinator.db_url, f"org-{number}", f"a@{number}.test")


@pytest.fixture
async def mesh(coordinator: Coordinator, admin_key: str) -> AsyncIterator[Mesh]:
    async with grpc.aio.insecure_channel(coordinator.target) as channel:
        mesh = Mesh(channel, admin_key)
        try:
            yield mesh
        finally:
            for call in mesh.calls:
                await hang_up(call)


# ---- who gets in ----


async def test_an_approved_node_gets_a_full_map_that_includes_itself(
    mesh: Mesh,
) -> None:
    device = await mesh.link("Ada's laptop")
    assert device.node is not None

    stream = await mesh.sync(device)

    me = stream.full_map.self
    assert me.public_key == device.public_key
    assert me.node_id == device.node.id
    assert any(a.startswith(f"{device.node.ipv4}/") for a in me.addresses)
    assert any(a.startswith(f"{device.node.ipv6}/") for a in me.addresses)
    # The shared peer list may carry the node's own entry; it must match
    # the node and a node ignores it.
    own = [p for p in stream.full_map.peers if p.public_key == device.public_key]
    assert all(p.node_id == device.node.id for p in own)


async def test_the_challenge_names_the_key_poll_link_returned(mesh: Mesh) -> None:
    device = await mesh.link()

    call, challenge = await mesh.challenge()

    assert challenge.coordinator_public_key == device.coordinator_key
    assert len(challenge.nonce) >= 16


async def test_an_answer_boxed_with_another_key_is_permission_denied(
    mesh: Mesh,
) -> None:
    device = await mesh.link()
    call, challenge = await mesh.challenge()
    forged = answer_challenge(
        PrivateKey.generate(), challenge.coordinator_public_key, challenge.nonce
    )

    await mesh.hello(call, device.public_key, forged)

    assert await refusal(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_replayed_answer_is_permission_denied(mesh: Mesh) -> None:
    device = await mesh.link()
    first = await mesh.sync(device)
    call, _ = await mesh.challenge()

    await mesh.hello(call, device.public_key, first.answer)

    assert await refusal(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_an_unknown_key_is_permission_denied(mesh: Mesh) -> None:
    stranger = Device(PrivateKey.generate())
    call, challenge = await mesh.challenge()
    answer = answer_challenge(
        stranger.private_key, challenge.coordinator_public_key, challenge.nonce
    )

    await mesh.hello(call, stranger.public_key, answer)

    assert await refusal(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_revoked_node_is_refused_with_permission_denied(mesh: Mesh) -> None:
    device = await mesh.link()
    await mesh.revoke(device)
    call, challenge = await mesh.challenge()
    answer = answer_challenge(
        device.private_key, challenge.coordinator_public_key, challenge.nonce
    )

    await mesh.hello(call, device.public_key, answer)

    assert await refusal(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_an_open_stream_of_a_revoked_node_is_told_and_closed(mesh: Mesh) -> None:
    device = await mesh.link()
    stream = await mesh.sync(device)

    await mesh.revoke(device)

    kinds = []
    while (message := await stream.next_message()).WhichOneof("kind") != "revoked":
        kinds.append(message.WhichOneof("kind"))
    assert set(kinds) <= {"delta"}
    with anyio.fail_after(READ_TIMEOUT):
        assert await stream.call.read() is grpc.aio.EOF
    reconnect = await mesh.challenge()
    answer = answer_challenge(
        device.private_key, reconnect[1].coordinator_public_key, reconnect[1].nonce
    )
    await mesh.hello(reconnect[0], device.public_key, answer)
    assert await refusal(reconnect[0]) == grpc.StatusCode.PERMISSION_DENIED


# ---- what online nodes are sent ----


async def test_online_nodes_receive_a_newly_approved_peer_as_a_delta(
    mesh: Mesh,
) -> None:
    first, second = await mesh.link("first"), await mesh.link("second")
    streams = [
        await mesh.sync(first, "192.0.2.1:51820"),
        await mesh.sync(second, "192.0.2.2:51820"),
    ]

    third = await mesh.link("third")

    assert third.node is not None
    for stream in streams:
        delta = await stream.delta_upserting(third.public_key)
        peer = next(p for p in delta.upserted if p.public_key == third.public_key)
        assert peer.node_id == third.node.id
        assert set(peer.allowed_ips) == {
            f"{third.node.ipv4}/32",
            f"{third.node.ipv6}/128",
        }
        assert list(delta.removed) == []


async def test_the_first_node_learns_of_a_peer_that_comes_online_after_it(
    mesh: Mesh,
) -> None:
    first, second = await mesh.link("first"), await mesh.link("second")
    stream = await mesh.sync(first)
    peers = {p.public_key for p in stream.full_map.peers} - {first.public_key}
    assert peers == {second.public_key}

    later = await mesh.sync(second, "192.0.2.2:51820")

    delta = await stream.delta_upserting(second.public_key)
    peer = next(p for p in delta.upserted if p.public_key == second.public_key)
    assert "192.0.2.2:51820" in peer.endpoints
    assert peer.online
    # The newcomer's first map predates its own presence change (presence
    # is written in batches), so it too learns of that change as a delta.
    own = await later.delta_upserting(second.public_key)
    assert own.version >= delta.version


async def test_revoking_a_node_sends_its_removal_to_the_others(mesh: Mesh) -> None:
    keeper, other, victim = [await mesh.link(n) for n in ("keeper", "other", "victim")]
    streams = [await mesh.sync(keeper), await mesh.sync(other)]
    for stream in streams:
        await stream.settle()

    await mesh.revoke(victim)

    for stream in streams:
        delta = await stream.next_delta()
        assert list(delta.removed) == [victim.public_key]
        assert list(delta.upserted) == []


async def test_a_node_is_not_sent_the_changes_of_another_org(
    mesh: Mesh, coordinator: Coordinator
) -> None:
    number = next(_org_numbers)
    other_key = await create_org_key(
        coordinator.db_url, f"org-{number}", f"b@{number}.test"
    )
    other = Mesh(mesh.channel, other_key)
    watcher = await other.sync(await other.link("watcher"))
    mesh.calls.append(watcher.call)
    await watcher.settle()

    await mesh.link("elsewhere")
    newcomer = await other.link("newcomer")

    delta = await watcher.next_delta()
    assert [p.public_key for p in delta.upserted] == [newcomer.public_key]


# ---- bytes that are not a message ----

CORRUPT = b"\x0a\xff\xff\xff\xff\x0f"  # a length prefix far past the end


def _raw_call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(
        method, request_serializer=lambda raw: raw, response_deserializer=lambda b: b
    )


@pytest.mark.parametrize(
    "method",
    [
        "/runmesh.v1.MeshService/StartLink",
        "/runmesh.v1.MeshService/PollLink",
        "/runmesh.v1.AdminService/ApproveLink",
        "/runmesh.v1.AdminService/ListNodes",
        "/runmesh.v1.AdminService/RenameNode",
    ],
)
async def test_a_corrupt_request_is_invalid_argument_and_logs_no_traceback(
    mesh: Mesh, coordinator: Coordinator, method: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _raw_call(mesh.channel, method)(
            CORRUPT, metadata=mesh.auth, timeout=READ_TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid" in (refused.value.details() or "")
    assert "DecodeError" not in (refused.value.details() or "")
    assert ("runmesh-reason", "invalid_request") in tuple(
        refused.value.trailing_metadata() or ()
    )
    assert "DecodeError" not in coordinator.log()


def _raw_sync(
    mesh: Mesh,
) -> grpc.aio.StreamStreamCall[bytes, mesh_pb2.CoordinatorMessage]:
    call = mesh.channel.stream_stream(
        "/runmesh.v1.MeshService/Sync",
        request_serializer=lambda raw: raw,
        response_deserializer=mesh_pb2.CoordinatorMessage.FromString,
    )()
    mesh.calls.append(call)  # type: ignore[arg-type]
    return call


async def test_a_corrupt_message_before_the_hello_ends_sync_invalid_argument(
    mesh: Mesh,
) -> None:
    call = _raw_sync(mesh)
    assert (await call.read()).WhichOneof("kind") == "challenge"
    await call.write(CORRUPT)
    assert await refusal(call) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_corrupt_message_after_the_first_map_ends_sync_invalid_argument(
    mesh: Mesh,
) -> None:
    device = await mesh.link("corrupt-later")
    call = _raw_sync(mesh)
    challenge = (await call.read()).challenge
    answer = answer_challenge(
        device.private_key, challenge.coordinator_public_key, challenge.nonce
    )
    hello = mesh_pb2.Hello(public_key=device.public_key, challenge_answer=answer)
    await call.write(mesh_pb2.NodeMessage(hello=hello).SerializeToString())
    with anyio.fail_after(READ_TIMEOUT):
        first = await call.read()
    assert first.WhichOneof("kind") == "full_map"

    await call.write(CORRUPT)

    assert await refusal(call) == grpc.StatusCode.INVALID_ARGUMENT

"""The device's side of the link flow: start, show the code, poll."""

from __future__ import annotations

import asyncio
import platform
import socket
from collections.abc import Callable
from typing import TypeVar

import grpc
from nacl.public import PrivateKey

from meshd import __version__
from meshd.channel import open_channel
from meshd.errors import LinkFailed, MeshdError
from meshd.state import Identity, StateDir
from runmesh.v1 import mesh_pb2, mesh_pb2_grpc
from runmesh.wgkey import encode_key

T = TypeVar("T")
Show = Callable[[mesh_pb2.StartLinkResponse], None]


async def link_device(
    target: str, state: StateDir, label: str | None, show: Show
) -> Identity:
    """Run the link flow until the code is approved, expired or denied."""
    key = state.load_or_create_key()
    public_key = encode_key(bytes(key.public_key))
    async with open_channel(target) as channel:
        stub = mesh_pb2_grpc.MeshServiceStub(channel)
        started = await _call(
            stub.StartLink(
                mesh_pb2.StartLinkRequest(
                    public_key=public_key,
                    device_label=label or socket.gethostname(),
                    os=platform.system().lower(),
                    app_version=__version__,
                    hostname=socket.gethostname(),
                ),
                timeout=15,
            ),
            target,
        )
        show(started)
        answer = await _poll_until_settled(stub, target, started, public_key)
    return _identity_of(answer, key, target)


async def _poll_until_settled(
    stub: mesh_pb2_grpc.MeshServiceStub,
    target: str,
    started: mesh_pb2.StartLinkResponse,
    public_key: str,
) -> mesh_pb2.PollLinkResponse:
    interval = max(1, started.interval_seconds)
    request = mesh_pb2.PollLinkRequest(code=started.code, public_key=public_key)
    while True:
        await asyncio.sleep(interval)
        try:
            answer: mesh_pb2.PollLinkResponse = await stub.PollLink(request, timeout=15)
        except grpc.aio.AioRpcError as exc:
            retry_after = _retry_after(exc)
            if retry_after is not None:
                # Slow down as told: the coordinator's pace wins over ours.
                interval = max(interval, retry_after)
                continue
            transient = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if exc.code() in transient:
                continue  # the coordinator may come back before the code expires
            raise MeshdError(f"link poll failed: {exc.details()}") from None
        interval = max(1, answer.interval_seconds or interval)
        if answer.status == mesh_pb2.LINK_STATUS_APPROVED:
            return answer
        if answer.status == mesh_pb2.LINK_STATUS_EXPIRED:
            raise LinkFailed("the link code expired; run `meshd link` again")
        if answer.status == mesh_pb2.LINK_STATUS_DENIED:
            raise LinkFailed("the link request was denied")


def _retry_after(exc: grpc.aio.AioRpcError) -> int | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after" and str(value).isdigit():
            return int(value)
    return None


async def _call(
    call: grpc.aio.UnaryUnaryCall[mesh_pb2.StartLinkRequest, T], target: str
) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise MeshdError(f"cannot reach the coordinator at {target}") from None
        raise MeshdError(f"link start refused: {exc.details()}") from None


def _identity_of(
    answer: mesh_pb2.PollLinkResponse, key: PrivateKey, target: str
) -> Identity:
    node = answer.node
    return Identity(
        node_id=node.id,
        org_id=node.org_id,
        name=node.name,
        public_key=encode_key(bytes(key.public_key)),
        # The address this device just reached the coordinator on; the
        # advertised one (answer.coordinator.target) is for clients that
        # linked through the REST gateway and know no gRPC address yet.
        coordinator_target=target,
        coordinator_public_key=answer.coordinator.public_key,
        ipv4=node.ipv4,
        ipv6=node.ipv6,
    )

"""A fake coordinator and helpers for the gateway's translation tests.

The fake is a real grpc.aio server on a free loopback port that answers each
RPC with whatever the test put in ``replies`` and records what it received.
It has no behaviour of the coordinator's own.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from google.protobuf import timestamp_pb2

from gateway.app import create_app
from runmesh.v1 import admin_pb2_grpc, mesh_pb2_grpc, node_pb2

KEY = "mBvI7xQmN4jzDeTt3jV1SEpvYyv3ra9Zk5yqF0wYbX4="
API_KEY = "rt_live_abcdefghijklmnop"


@dataclass
class Failure:
    """Makes the fake abort the call the way the coordinator would."""

    code: grpc.StatusCode
    details: str = ""
    # The coordinator sends one with every error it raises; None stands for a
    # status made by gRPC itself or by something between the two.
    reason: str | None = None
    retry_after: str | None = None


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class FakeCoordinator(
    mesh_pb2_grpc.MeshServiceServicer, admin_pb2_grpc.AdminServiceServicer
):
    target: str = ""
    replies: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # Runs before answering; lets a test make the coordinator slow.
    before_answer: Callable[[], Awaitable[None]] | None = None

    @property
    def last(self) -> Call:
        return self.calls[-1]

    async def _answer(self, method: str, request: Any, context: Any) -> Any:
        metadata = {key: value for key, value in context.invocation_metadata()}
        self.calls.append(Call(method, request, metadata))
        if self.before_answer is not None:
            await self.before_answer()
        reply = self.replies[method]
        if isinstance(reply, Failure):
            trailers = []
            if reply.reason is not None:
                trailers.append(("runmesh-reason", reply.reason))
            if reply.retry_after is not None:
                trailers.append(("retry-after", reply.retry_after))
            await context.abort(
                reply.code, reply.details, trailing_metadata=tuple(trailers)
            )
        return reply

    async def StartLink(self, request: Any, context: Any) -> Any:
        return await self._answer("StartLink", request, context)

    async def PollLink(self, request: Any, context: Any) -> Any:
        return await self._answer("PollLink", request, context)

    async def ApproveLink(self, request: Any, context: Any) -> Any:
        return await self._answer("ApproveLink", request, context)

    async def ListNodes(self, request: Any, context: Any) -> Any:
        return await self._answer("ListNodes", request, context)

    async def GetNode(self, request: Any, context: Any) -> Any:
        return await self._answer("GetNode", request, context)

    async def GetNodeConfig(self, request: Any, context: Any) -> Any:
        return await self._answer("GetNodeConfig", request, context)

    async def RenameNode(self, request: Any, context: Any) -> Any:
        return await self._answer("RenameNode", request, context)

    async def RevokeNode(self, request: Any, context: Any) -> Any:
        return await self._answer("RevokeNode", request, context)

    async def GetOverview(self, request: Any, context: Any) -> Any:
        return await self._answer("GetOverview", request, context)

    async def ListAuditEvents(self, request: Any, context: Any) -> Any:
        return await self._answer("ListAuditEvents", request, context)

    async def ListDeviceActivity(self, request: Any, context: Any) -> Any:
        return await self._answer("ListDeviceActivity", request, context)


def timestamp(iso: str, nanos: int = 0) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(iso)
    stamp.nanos = nanos
    return stamp


def sample_node(**overrides: Any) -> node_pb2.Node:
    fields: dict[str, Any] = dict(
        id="node_7h3k2m9x",
        org_id="org_q4r8t2",
        name="ada-laptop",
        device_label="Ada's MacBook",
        hostname="adas-mbp",
        os="macos",
        app_version="1.4.2",
        public_key=KEY,
        ipv4="100.64.0.7",
        ipv6="fd7a:115c:a1e0::7",
        status=node_pb2.NODE_STATUS_ONLINE,
        owner_user_id="user_m2n6p1",
        endpoints=["203.0.113.7:51820"],
        created_at=timestamp("2026-12-03T18:24:39Z", nanos=123_456_789),
        last_seen_at=timestamp("2026-12-04T09:00:00Z"),
    )
    fields.update(overrides)
    return node_pb2.Node(**fields)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def open_gateway(
    target: str, *, deadline: float = 5.0
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, its lifespan run, behind an httpx client."""
    app = create_app(target, deadline=deadline)
    # raise_app_exceptions=False: a crash must show as the 500 a client sees.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway"
        ) as client:
            yield client


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with ``code``; returns ``error``."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "requestId"}
    assert error["requestId"].startswith("req_")
    assert response.headers["x-request-id"] == error["requestId"]
    return error

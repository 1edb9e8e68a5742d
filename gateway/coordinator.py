"""The coordinator as the gateway sees it: one typed method per RPC.

One ``grpc.aio`` channel per process, opened in the app's lifespan (never at
import time: a channel made before a fork or outside the event loop breaks).
Every call carries the caller's metadata and a deadline, so a stuck
coordinator turns into ``unavailable`` instead of a hanging HTTP request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import grpc
from fastapi import Depends, Request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.caller import Caller
from gateway.errors import UnexpectedReply
from runmesh.v1 import admin_pb2, mesh_pb2, node_pb2
from runmesh.v1.admin_pb2_grpc import AdminServiceStub
from runmesh.v1.mesh_pb2_grpc import MeshServiceStub

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 10.0
# A readiness probe must answer before the prober gives up (often 1–5 s).
HEALTH_CHECK_SECONDS = 2.0

ReplyT = TypeVar("ReplyT")

_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    # gRPC's default reconnect backoff grows to two minutes; after a
    # coordinator restart the gateway would keep answering 503 that long.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


@dataclass(frozen=True)
class ChannelSecurity:
    """How the channel to the coordinator is protected."""

    tls: bool = False
    # PEM certificates to trust for the coordinator's; None: the system roots.
    root_certificates: bytes | None = None
    # The name the certificate must carry, when it is not the target's host
    # (a coordinator reached by address, or through a tunnel).
    server_name: str | None = None

    def describe(self) -> str:
        if not self.tls:
            return "plaintext"
        roots = "the system roots" if self.root_certificates is None else "a CA file"
        return f"TLS trusting {roots}"


PLAINTEXT = ChannelSecurity()


class Coordinator:
    """Typed calls to MeshService and AdminService over one channel."""

    def __init__(self, channel: Any, *, deadline: float) -> None:
        self._channel = channel
        # The generated stubs are untyped; the methods below give them types.
        self._mesh = MeshServiceStub(channel)
        self._admin = AdminServiceStub(channel)
        # Its stubs type the constructor only, not the methods.
        self._health: Any = health_pb2_grpc.HealthStub(channel)
        self._deadline = deadline

    @classmethod
    def connect(
        cls,
        target: str,
        *,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        security: ChannelSecurity = PLAINTEXT,
    ) -> Coordinator:
        if not security.tls:
            channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            return cls(channel, deadline=deadline)

        options = list(_CHANNEL_OPTIONS)
        if security.server_name is not None:
            options.append(("grpc.ssl_target_name_override", security.server_name))
        credentials = grpc.ssl_channel_credentials(security.root_certificates)
        channel = grpc.aio.secure_channel(target, credentials, options=options)
        return cls(channel, deadline=deadline)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, rpc: Any, request: Any, reply_type: type[ReplyT], caller: Caller
    ) -> ReplyT:
        reply = await rpc(request, timeout=self._deadline, metadata=caller.metadata())
        if not isinstance(reply, reply_type):
            raise UnexpectedReply(f"expected {reply_type.__name__}")
        return reply

    # ---- grpc.health.v1 ----

    async def is_serving(self, caller: Caller) -> bool:
        """Whether the coordinator answers the standard health check SERVING.

        Service "" is the coordinator as a whole: it turns SERVING once its
        schema is current and NOT_SERVING when it starts shutting down.
        """
        request = health_pb2.HealthCheckRequest(service="")
        try:
            reply = await self._health.Check(
                request, timeout=HEALTH_CHECK_SECONDS, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as exc:
            # %.300s: the details of a failed TLS handshake say which check
            # failed, but a peer that is not the coordinator may send any size.
            log.warning(
                "coordinator health check failed (%s): %.300s request_id=%s",
                exc.code(),
                exc.details(),
                caller.request_id,
            )
            return False
        if not isinstance(reply, health_pb2.HealthCheckResponse):
            raise UnexpectedReply("expected HealthCheckResponse")

        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            log.warning(
                "coordinator not serving (%s) request_id=%s", status, caller.request_id
            )
            return False
        return True

    # ---- MeshService ----

    async def start_link(
        self, request: mesh_pb2.StartLinkRequest, caller: Caller
    ) -> mesh_pb2.StartLinkResponse:
        rpc = self._mesh.StartLink
        return await self._call(rpc, request, mesh_pb2.StartLinkResponse, caller)

    async def poll_link(
        self, request: mesh_pb2.PollLinkRequest, caller: Caller
    ) -> mesh_pb2.PollLinkResponse:
        rpc = self._mesh.PollLink
        return await self._call(rpc, request, mesh_pb2.PollLinkResponse, caller)

    # ---- AdminService ----

    async def approve_link(
        self, request: admin_pb2.ApproveLinkRequest, caller: Caller
    ) -> node_pb2.Node:
        rpc = self._admin.ApproveLink
        return await self._call(rpc, request, node_pb2.Node, caller)

    async def list_nodes(
        self, request: admin_pb2.ListNodesRequest, caller: Caller
    ) -> admin_pb2.ListNodesResponse:
        rpc = self._admin.ListNodes
        return await self._call(rpc, request, admin_pb2.ListNodesResponse, caller)

    async def get_node(
        self, request: admin_pb2.GetNodeRequest, caller: Caller
    ) -> node_pb2.Node:
        rpc = self._admin.GetNode
        return await self._call(rpc, request, node_pb2.Node, caller)

    async def get_node_config(
        self, request: admin_pb2.GetNodeRequest, caller: Caller
    ) -> admin_pb2.NodeConfig:
        rpc = self._admin.GetNodeConfig
        return await self._call(rpc, request, admin_pb2.NodeConfig, caller)

    async def rename_node(
        self, request: admin_pb2.RenameNodeRequest, caller: Caller
    ) -> node_pb2.Node:
        rpc = self._admin.RenameNode
        return await self._call(rpc, request, node_pb2.Node, caller)

    async def revoke_node(
        self, request: admin_pb2.RevokeNodeRequest, caller: Caller
    ) -> node_pb2.Node:
        rpc = self._admin.RevokeNode
        return await self._call(rpc, request, node_pb2.Node, caller)

    async def get_overview(
        self, request: admin_pb2.GetOverviewRequest, caller: Caller
    ) -> admin_pb2.Overview:
        rpc = self._admin.GetOverview
        return await self._call(rpc, request, admin_pb2.Overview, caller)

    async def list_audit_events(
        self, request: admin_pb2.ListAuditEventsRequest, caller: Caller
    ) -> admin_pb2.ListAuditEventsResponse:
        rpc = self._admin.ListAuditEvents
        reply_type = admin_pb2.ListAuditEventsResponse
        return await self._call(rpc, request, reply_type, caller)

    async def list_device_activity(
        self, request: admin_pb2.ListDeviceActivityRequest, caller: Caller
    ) -> admin_pb2.ListDeviceActivityResponse:
        rpc = self._admin.ListDeviceActivity
        reply_type = admin_pb2.ListDeviceActivityResponse
        return await self._call(rpc, request, reply_type, caller)


def coordinator_of(request: Request) -> Coordinator:
    coordinator = getattr(request.app.state, "coordinator", None)
    if not isinstance(coordinator, Coordinator):
        raise RuntimeError("no coordinator channel: the app's lifespan did not run")
    return coordinator


CoordinatorDep = Annotated[Coordinator, Depends(coordinator_of)]

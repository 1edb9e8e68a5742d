"""MeshService: the link flow and the Sync stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from sqlalchemy.orm import Session

from coordinator import linking, metrics
from coordinator.errors import InvalidArgument, NotFound
from coordinator.models import LinkRequest, LinkState, Node
from coordinator.rpc.boundary import Context, tolerant_parser, translate_errors
from coordinator.rpc.convert import node_message, timestamp
from coordinator.rpc.credentials import peer_ip, source_of
from coordinator.runtime import Runtime
from coordinator.store import in_transaction
from coordinator.sync import NodeStream
from runmesh.v1 import mesh_pb2

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 4096

_LINK_STATUS = {
    LinkState.PENDING: mesh_pb2.LINK_STATUS_PENDING,
    LinkState.APPROVED: mesh_pb2.LINK_STATUS_APPROVED,
    LinkState.EXPIRED: mesh_pb2.LINK_STATUS_EXPIRED,
    LinkState.DENIED: mesh_pb2.LINK_STATUS_DENIED,
}


class MeshServicer:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @translate_errors
    async def StartLink(
        self, request: mesh_pb2.StartLinkRequest, context: Context
    ) -> mesh_pb2.StartLinkResponse:
        await self._rt.limiter.started(
            source_of(context, self._rt.settings.trusted_proxies)
        )
        if request.client_metadata.ByteSize() > MAX_METADATA_BYTES:
            raise InvalidArgument(
                f"clientMetadata is larger than {MAX_METADATA_BYTES} bytes"
            )
        try:
            metadata = MessageToDict(request.client_metadata)
        except ValueError:
            raise InvalidArgument("clientMetadata: numbers must be finite") from None
        linking.check_metadata(metadata)

        def work(session: Session) -> LinkRequest:
            return linking.start_link(
                session,
                self._rt.settings,
                public_key=request.public_key,
                device_label=request.device_label,
                os=request.os,
                app_version=request.app_version,
                hostname=request.hostname,
                client_metadata=metadata,
            )

        link = await in_transaction(self._rt.sessions, work)
        metrics.LINK_REQUESTS.labels("start", "ok").inc()
        log.info("link started link_id=%s", link.id)
        return mesh_pb2.StartLinkResponse(
            code=link.code,
            url=linking.approve_url(self._rt.settings, link.code),
            expires_at=timestamp(link.expires_at),
            interval_seconds=self._rt.settings.link_interval,
        )

    @translate_errors
    async def PollLink(
        self, request: mesh_pb2.PollLinkRequest, context: Context
    ) -> mesh_pb2.PollLinkResponse:

        source = source_of(context, self._rt.settings.trusted_proxies)
        await self._rt.limiter.check_poll(source)

        def work(session: Session) -> mesh_pb2.PollLinkResponse:
            link = linking.poll_link(
                session,
                self._rt.settings,
                code=request.code,
                public_key=request.public_key,
            )
            return self._poll_answer(session, link)

        try:
            return await in_transaction(self._rt.sessions, work)
        except (NotFound, InvalidArgument):
            await self._rt.limiter.poll_failed(source)
            raise

    def _poll_answer(
        self, session: Session, link: LinkRequest
    ) -> mesh_pb2.PollLinkResponse:
        metrics.LINK_REQUESTS.labels("poll", str(link.state)).inc()
        if link.state == LinkState.EXPIRED:
            log.info("link expired link_id=%s", link.id)
        answer = mesh_pb2.PollLinkResponse(
            status=_LINK_STATUS[LinkState(link.state)],
            expires_at=timestamp(link.expires_at),
            interval_seconds=self._rt.settings.link_interval,
        )
        if link.state == LinkState.APPROVED and link.node_id:
            node = session.get(Node, link.node_id)
            if node is not None:
                answer.node.CopyFrom(node_message(node))
            answer.coordinator.CopyFrom(
                mesh_pb2.CoordinatorEndpoint(
                    target=self._rt.settings.advertise_target,
                    public_key=self._rt.identity.public_key,
                )
            )
        return answer

    @translate_errors
    async def Sync(
        self,
        request_iterator: AsyncIterator[mesh_pb2.NodeMessage],
        context: Context,
    ) -> None:
        stream = NodeStream(
            self._rt.streams, request_iterator, context.write, peer_ip(context)
        )
        await stream.run()


def add_to_server(servicer: MeshServicer, server: grpc.aio.Server) -> None:
    """Register MeshService, letting Sync write pre-serialised bytes.

    The generated registration serialises every message per stream; the hub
    serialises a delta once for all subscribers, so the response serializer
    here passes bytes through unchanged.
    """

    def passthrough(message: bytes | mesh_pb2.CoordinatorMessage) -> bytes:
        if isinstance(message, bytes):
            return message
        return message.SerializeToString()

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "StartLink": grpc.unary_unary_rpc_method_handler(
            servicer.StartLink,
            request_deserializer=tolerant_parser(mesh_pb2.StartLinkRequest),
            response_serializer=mesh_pb2.StartLinkResponse.SerializeToString,
        ),
        "PollLink": grpc.unary_unary_rpc_method_handler(
            servicer.PollLink,
            request_deserializer=tolerant_parser(mesh_pb2.PollLinkRequest),
            response_serializer=mesh_pb2.PollLinkResponse.SerializeToString,
        ),
        "Sync": grpc.stream_stream_rpc_method_handler(
            servicer.Sync,
            request_deserializer=tolerant_parser(mesh_pb2.NodeMessage),
            response_serializer=passthrough,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("runmesh.v1.MeshService", handlers),)
    )

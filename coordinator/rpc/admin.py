"""AdminService: what API-key holders do to their org's mesh."""

from __future__ import annotations

import datetime as dt
import logging
import time

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import accounts, feeds, linking, metrics, nodeconfig, nodes
from coordinator.accounts import Caller
from coordinator.errors import CoordinatorError, Expired, RateLimited
from coordinator.models import Node, Org
from coordinator.rpc import convert
from coordinator.rpc.boundary import Context, translate_errors
from coordinator.rpc.credentials import api_key_of, source_of
from coordinator.runtime import Runtime
from coordinator.store import in_transaction
from runmesh.v1 import admin_pb2, node_pb2

WindowRequest = admin_pb2.ListAuditEventsRequest | admin_pb2.ListDeviceActivityRequest


def _window_of(request: WindowRequest) -> feeds.Window:
    def at(field: str) -> dt.datetime | None:
        if not request.HasField(field):
            return None
        stamp: Timestamp = getattr(request, field)
        return stamp.ToDatetime(tzinfo=dt.UTC)

    return feeds.Window(since=at("since"), until=at("until"))


log = logging.getLogger(__name__)


class AdminServicer:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def _caller(self, session: AsyncSession, context: Context) -> Caller:
        return await accounts.authenticate(session, api_key_of(context))

    @translate_errors
    async def ApproveLink(
        self, request: admin_pb2.ApproveLinkRequest, context: Context
    ) -> node_pb2.Node:
        limiter = self._rt.limiter
        source = source_of(context, self._rt.settings.trusted_proxies)
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
        await limiter.check_approval(caller.key_id, source)

        async def work(session: AsyncSession) -> node_pb2.Node:
            caller = await self._caller(session, context)
            node = await linking.approve_link(
                session, self._rt.settings, caller, code=request.code, name=request.name
            )
            return convert.node_message(node)

        started = time.perf_counter()
        try:
            answer = await in_transaction(self._rt.sessions, work)
        except RateLimited:
            raise
        except Expired:
            log.info("link expired org_id=%s (approved too late)", caller.org_id)
            await limiter.approval_failed(caller.key_id, source)
            await in_transaction(
                self._rt.sessions,
                lambda s: linking.record_expired_attempt(s, caller, request.code),
            )
            raise
        except CoordinatorError:
            # Every refused approval counts, whatever the reason: a guess
            # that hits an expired or used code is still a guess.
            await limiter.approval_failed(caller.key_id, source)
            raise
        self._rt.hub.notify(answer.org_id)
        metrics.APPROVAL_LATENCY.observe(time.perf_counter() - started)
        metrics.LINK_REQUESTS.labels("approve", "ok").inc()
        log.info("link approved org_id=%s node_id=%s", answer.org_id, answer.id)
        return answer

    @translate_errors
    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: Context
    ) -> admin_pb2.ListNodesResponse:
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
            where = nodes.NodeFilter(
                include_revoked=request.include_revoked,
                owner_user_id=caller.user_id if request.owned_by_caller else None,
                name_prefix=request.name_prefix,
                ip=request.ip,
            )
            page = await nodes.list_nodes(
                session,
                caller,
                self._rt.cursors,
                limit=request.limit,
                cursor=request.cursor,
                where=where,
            )
            return admin_pb2.ListNodesResponse(
                nodes=[convert.node_message(n) for n in page.nodes],
                next_cursor=page.next_cursor,
                has_more=page.has_more,
            )

    @translate_errors
    async def GetNode(
        self, request: admin_pb2.GetNodeRequest, context: Context
    ) -> node_pb2.Node:
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
            node = await nodes.get_node(session, caller, request.id)
            return convert.node_message(node)

    @translate_errors
    async def GetNodeConfig(
        self, request: admin_pb2.GetNodeRequest, context: Context
    ) -> admin_pb2.NodeConfig:
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
            node = await nodes.get_node(session, caller, request.id)
            org = await session.get(Org, node.org_id)
            assert org is not None  # nodes.org_id is a foreign key
            config = await nodeconfig.config_of(session, org, node)
            return convert.config_message(config)

    @translate_errors
    async def RenameNode(
        self, request: admin_pb2.RenameNodeRequest, context: Context
    ) -> node_pb2.Node:
        async def work(session: AsyncSession) -> Node:
            caller = await self._caller(session, context)
            return await nodes.rename_node(session, caller, request.id, request.name)

        node = await in_transaction(self._rt.sessions, work)
        self._rt.hub.notify(node.org_id)
        return convert.node_message(node)

    @translate_errors
    async def RevokeNode(
        self, request: admin_pb2.RevokeNodeRequest, context: Context
    ) -> node_pb2.Node:
        async def work(session: AsyncSession) -> Node:
            caller = await self._caller(session, context)
            return await nodes.revoke_node(session, caller, request.id)

        node = await in_transaction(self._rt.sessions, work)
        self._rt.hub.notify(node.org_id)
        log.info("node revoked org_id=%s node_id=%s", node.org_id, node.id)
        return convert.node_message(node)

    @translate_errors
    async def GetOverview(
        self, request: admin_pb2.GetOverviewRequest, context: Context
    ) -> admin_pb2.Overview:
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
            counts = await nodes.overview(session, caller)
        return admin_pb2.Overview(
            total=counts.total,
            online=counts.online,
            offline=counts.offline,
            revoked=counts.revoked,
            by_os=counts.by_os,
        )

    @translate_errors
    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: Context
    ) -> admin_pb2.ListAuditEventsResponse:
        window = _window_of(request)
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
            page = await feeds.audit_events(
                session,
                caller,
                self._rt.cursors,
                limit=request.limit,
                cursor=request.cursor,
                window=window,
                action=request.action,
            )
        return admin_pb2.ListAuditEventsResponse(
            events=[convert.audit_message(e) for e in page.items],
            next_cursor=page.next_cursor,
            has_more=page.has_more,
        )

    @translate_errors
    async def ListDeviceActivity(
        self, request: admin_pb2.ListDeviceActivityRequest, context: Context
    ) -> admin_pb2.ListDeviceActivityResponse:
        window = _window_of(request)
        async with self._rt.readers() as session:
            caller = await self._caller(session, context)
            caller.require("activity:read")
            # The node must be the caller's org's: otherwise not_found.
            await nodes.get_node(
                session, caller.with_scope("runmesh:read"), request.node_id
            )
            page = await feeds.device_activity(
                session,
                caller,
                self._rt.cursors,
                node_id=request.node_id,
                limit=request.limit,
                cursor=request.cursor,
                window=window,
            )
        return admin_pb2.ListDeviceActivityResponse(
            activities=[convert.activity_message(a) for a in page.items],
            next_cursor=page.next_cursor,
            has_more=page.has_more,
        )

"""AdminService: what API-key holders do to their org's mesh."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from coordinator import accounts, approvals, feeds, linking, metrics, nodeconfig, nodes
from coordinator.accounts import Caller
from coordinator.errors import CoordinatorError, Expired, RateLimited, Unauthenticated
from coordinator.models import DeviceActivity, Org
from coordinator.rpc import convert
from coordinator.rpc.boundary import Context, translate_errors
from coordinator.rpc.credentials import api_key_of, source_of
from coordinator.runtime import Runtime
from coordinator.store import in_transaction, read
from runmesh.v1 import admin_pb2, node_pb2

T = TypeVar("T")
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

    async def _read_as_caller(
        self, context: Context, look: Callable[[Session, Caller], T]
    ) -> T:
        """``look`` in one read with the caller authenticated in it: one
        hop to a database thread, not one for the key and one for the rest."""
        key = api_key_of(context)
        return await read(
            self._rt.readers, lambda s: look(s, accounts.authenticate(s, key))
        )

    async def _write_as_caller(
        self, context: Context, work: Callable[[Session, Caller], T]
    ) -> T:
        """``work`` in one unit of work with the caller authenticated in it
        (a key revoked a moment ago fails here)."""
        key = api_key_of(context)
        return await in_transaction(
            self._rt.sessions, lambda s: work(s, accounts.authenticate(s, key))
        )

    @translate_errors
    async def ApproveLink(
        self, request: admin_pb2.ApproveLinkRequest, context: Context
    ) -> node_pb2.Node:
        limiter = self._rt.limiter
        source = source_of(context, self._rt.settings.trusted_proxies)
        key = api_key_of(context)
        # Failures are counted per key before the key is looked up: the
        # approval is then one unit of work, authentication included.
        who = accounts.hash_key(key or "")
        await limiter.check_approval(who, source)

        def note_expired(session: Session, caller: Caller) -> str:
            linking.record_expired_attempt(session, caller, request.code)
            return caller.org_id

        started = time.perf_counter()
        try:
            node = await self._rt.approvals.approve(
                approvals.Request(key, request.code, request.name)
            )
        except (RateLimited, Unauthenticated):
            raise  # a bad key is no guess at a code
        except Expired:
            await limiter.approval_failed(who, source)
            org_id = await self._write_as_caller(context, note_expired)
            log.info("link expired org_id=%s (approved too late)", org_id)
            raise
        except CoordinatorError:
            # Every refused approval counts, whatever the reason: a guess
            # that hits an expired or used code is still a guess.
            await limiter.approval_failed(who, source)
            raise
        metrics.APPROVAL_LATENCY.observe(time.perf_counter() - started)
        metrics.LINK_REQUESTS.labels("approve", "ok").inc()
        log.info("link approved org_id=%s node_id=%s", node.org_id, node.id)
        return convert.node_message(node)

    @translate_errors
    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: Context
    ) -> admin_pb2.ListNodesResponse:
        def look(session: Session, caller: Caller) -> admin_pb2.ListNodesResponse:
            where = nodes.NodeFilter(
                include_revoked=request.include_revoked,
                owner_user_id=caller.user_id if request.owned_by_caller else None,
                name_prefix=request.name_prefix,
                ip=request.ip,
            )
            page = nodes.list_nodes(
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

        return await self._read_as_caller(context, look)

    @translate_errors
    async def GetNode(
        self, request: admin_pb2.GetNodeRequest, context: Context
    ) -> node_pb2.Node:
        node = await self._read_as_caller(
            context, lambda s, caller: nodes.get_node(s, caller, request.id)
        )
        return convert.node_message(node)

    @translate_errors
    async def GetNodeConfig(
        self, request: admin_pb2.GetNodeRequest, context: Context
    ) -> admin_pb2.NodeConfig:
        def look(session: Session, caller: Caller) -> admin_pb2.NodeConfig:
            node = nodes.get_node(session, caller, request.id)
            org = session.get(Org, node.org_id)
            assert org is not None  # nodes.org_id is a foreign key
            return convert.config_message(nodeconfig.config_of(session, org, node))

        return await self._read_as_caller(context, look)

    @translate_errors
    async def RenameNode(
        self, request: admin_pb2.RenameNodeRequest, context: Context
    ) -> node_pb2.Node:
        node = await self._write_as_caller(
            context,
            lambda s, caller: nodes.rename_node(s, caller, request.id, request.name),
        )
        self._rt.hub.notify(node.org_id)
        return convert.node_message(node)

    @translate_errors
    async def RevokeNode(
        self, request: admin_pb2.RevokeNodeRequest, context: Context
    ) -> node_pb2.Node:
        node = await self._write_as_caller(
            context, lambda s, caller: nodes.revoke_node(s, caller, request.id)
        )
        self._rt.hub.notify(node.org_id)
        log.info("node revoked org_id=%s node_id=%s", node.org_id, node.id)
        return convert.node_message(node)

    @translate_errors
    async def GetOverview(
        self, request: admin_pb2.GetOverviewRequest, context: Context
    ) -> admin_pb2.Overview:
        counts = await self._read_as_caller(context, nodes.overview)
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
        page = await self._read_as_caller(
            context,
            lambda session, caller: feeds.audit_events(
                session,
                caller,
                self._rt.cursors,
                limit=request.limit,
                cursor=request.cursor,
                window=window,
                action=request.action,
            ),
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

        def look(session: Session, caller: Caller) -> feeds.Page[DeviceActivity]:
            caller.require("activity:read")
            # The node must be the caller's org's: otherwise not_found.
            nodes.get_node(session, caller.with_scope("runmesh:read"), request.node_id)
            return feeds.device_activity(
                session,
                caller,
                self._rt.cursors,
                node_id=request.node_id,
                limit=request.limit,
                cursor=request.cursor,
                window=window,
            )

        page = await self._read_as_caller(context, look)
        return admin_pb2.ListDeviceActivityResponse(
            activities=[convert.activity_message(a) for a in page.items],
            next_cursor=page.next_cursor,
            has_more=page.has_more,
        )

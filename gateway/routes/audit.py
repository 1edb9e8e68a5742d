"""``/v1/runmesh/audit``: who did what in the org (``runmesh:read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway import convert, schemas
from gateway.caller import CallerDep
from gateway.coordinator import CoordinatorDep
from gateway.envelope import ListEnvelope, list_envelope
from gateway.errors import error_responses
from gateway.routes.params import PageDep, WindowDep
from runmesh.v1 import admin_pb2

router = APIRouter(prefix="/v1/runmesh/audit", tags=["audit"])


@router.get(
    "",
    summary="List audit events",
    responses=error_responses(400, 401, 403),
)
async def list_audit_events(
    coordinator: CoordinatorDep,
    caller: CallerDep,
    page: PageDep,
    window: WindowDep,
    action: Annotated[
        str | None,
        Query(
            max_length=64,
            description="only events with this action",
            examples=["node.revoked"],
        ),
    ] = None,
) -> ListEnvelope[schemas.AuditEvent]:
    """The org's RunMesh audit events, newest first."""
    request = admin_pb2.ListAuditEventsRequest(
        limit=page.limit,
        cursor=page.cursor,
        since=window.since,
        until=window.until,
        action=action or "",
    )
    reply = await coordinator.list_audit_events(request, caller)
    return list_envelope(
        caller.request_id,
        [convert.audit_event(event) for event in reply.events],
        has_more=reply.has_more,
        next_cursor=reply.next_cursor or None,
    )

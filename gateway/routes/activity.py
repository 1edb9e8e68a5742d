"""``/v1/runmesh/devices/{id}/activity``: a node's history (``activity:read``)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway import convert, schemas
from gateway.caller import CallerDep
from gateway.coordinator import CoordinatorDep
from gateway.envelope import ListEnvelope, list_envelope
from gateway.errors import error_responses
from gateway.routes.params import NodeId, PageDep, WindowDep
from runmesh.v1 import admin_pb2

router = APIRouter(prefix="/v1/runmesh/devices", tags=["activity"])


@router.get(
    "/{id}/activity",
    summary="List a device's activity",
    responses=error_responses(400, 401, 403, 404),
)
async def list_device_activity(
    node_id: NodeId,
    coordinator: CoordinatorDep,
    caller: CallerDep,
    page: PageDep,
    window: WindowDep,
) -> ListEnvelope[schemas.DeviceActivity]:
    """Connects, disconnects, endpoint changes and the like, newest first."""
    request = admin_pb2.ListDeviceActivityRequest(
        node_id=node_id,
        limit=page.limit,
        cursor=page.cursor,
        since=window.since,
        until=window.until,
    )
    reply = await coordinator.list_device_activity(request, caller)
    return list_envelope(
        caller.request_id,
        [convert.device_activity(activity) for activity in reply.activities],
        has_more=reply.has_more,
        next_cursor=reply.next_cursor or None,
    )

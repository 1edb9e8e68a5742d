"""``/v1/runmesh/overview``: the org's nodes counted (``runmesh:read``)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway import convert, schemas
from gateway.caller import CallerDep
from gateway.coordinator import CoordinatorDep
from gateway.envelope import Envelope, envelope
from gateway.errors import error_responses
from runmesh.v1 import admin_pb2

router = APIRouter(prefix="/v1/runmesh/overview", tags=["overview"])


@router.get(
    "",
    summary="Count the org's nodes",
    responses=error_responses(400, 401, 403),
)
async def get_overview(
    coordinator: CoordinatorDep, caller: CallerDep
) -> Envelope[schemas.Overview]:
    """Nodes by status, and active nodes by operating system."""
    reply = await coordinator.get_overview(admin_pb2.GetOverviewRequest(), caller)
    return envelope(caller.request_id, convert.overview(reply))

"""``/v1/runmesh/devices/link/*``: a device joins the mesh with a short code.

``start`` and ``poll`` need no API key: the device has none yet, and what a
poll returns is useless without the device's private key. A key sent to them
is ignored, not forwarded. ``approve`` needs a member's key with
``runmesh:write``; the coordinator checks it.
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway import convert, schemas
from gateway.caller import AnonymousCallerDep, CallerDep
from gateway.coordinator import CoordinatorDep
from gateway.envelope import Envelope, envelope
from gateway.errors import error_responses

router = APIRouter(prefix="/v1/runmesh/devices/link", tags=["link"])


@router.post(
    "/start",
    status_code=201,
    summary="Start linking a device",
    responses=error_responses(400, 409, 413, 429),
)
async def start_link(
    body: schemas.StartLinkBody,
    coordinator: CoordinatorDep,
    caller: AnonymousCallerDep,
) -> Envelope[schemas.LinkStarted]:
    """Open a link request for the device's key and get the code to show."""
    reply = await coordinator.start_link(convert.start_link_request(body), caller)
    return envelope(caller.request_id, convert.link_started(reply))


@router.post(
    "/poll",
    summary="Poll a link request",
    responses=error_responses(400, 404, 413, 429),
)
async def poll_link(
    body: schemas.PollLinkBody,
    coordinator: CoordinatorDep,
    caller: AnonymousCallerDep,
) -> Envelope[schemas.LinkState]:
    """Where the request stands; once approved, the node and where to sync."""
    reply = await coordinator.poll_link(convert.poll_link_request(body), caller)
    return envelope(caller.request_id, convert.link_state(reply))


@router.post(
    "/approve",
    summary="Approve a link code",
    responses=error_responses(400, 401, 403, 404, 409, 410, 413, 429),
)
async def approve_link(
    body: schemas.ApproveLinkBody, coordinator: CoordinatorDep, caller: CallerDep
) -> Envelope[schemas.Node]:
    """Create the node in the caller's org, owned by the caller."""
    reply = await coordinator.approve_link(convert.approve_link_request(body), caller)
    return envelope(caller.request_id, convert.node(reply))

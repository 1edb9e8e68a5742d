"""``/healthz`` and ``/readyz``: probes for a supervisor or a load balancer.

Outside ``/v1`` and outside the data envelope, as probes expect: a status
code and a tiny body, no API key. Liveness never calls the coordinator, so a
coordinator outage does not get every gateway restarted; readiness does, so
a load balancer stops sending to a gateway that could only answer 503.
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway import schemas
from gateway.caller import AnonymousCallerDep
from gateway.coordinator import HEALTH_CHECK_SECONDS, CoordinatorDep
from gateway.errors import ApiError, ErrorCode, error_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> schemas.Liveness:
    """200 while the process serves HTTP; no coordinator call."""
    return schemas.Liveness()


@router.get(
    "/readyz",
    summary="Readiness",
    description="200 when the coordinator answers its gRPC health check "
    f"SERVING within {HEALTH_CHECK_SECONDS:g} s; 503 otherwise.",
    responses=error_responses(),
)
async def readyz(
    coordinator: CoordinatorDep, caller: AnonymousCallerDep
) -> schemas.Readiness:
    if not await coordinator.is_serving(caller):
        raise ApiError(ErrorCode.UNAVAILABLE)
    return schemas.Readiness()

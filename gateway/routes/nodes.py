"""``/v1/runmesh/nodes``: the nodes of the caller's org (``runmesh:read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gateway import convert, schemas
from gateway.caller import CallerDep
from gateway.coordinator import CoordinatorDep
from gateway.envelope import Envelope, ListEnvelope, envelope, list_envelope
from gateway.errors import error_responses
from runmesh.v1 import admin_pb2

router = APIRouter(prefix="/v1/runmesh/nodes", tags=["nodes"])

NodeId = Annotated[
    str, Path(alias="id", min_length=1, max_length=128, examples=["node_7h3k2m9x"])
]


@router.get(
    "",
    summary="List nodes",
    responses=error_responses(400, 401, 403),
)
async def list_nodes(
    coordinator: CoordinatorDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="nextCursor of the last page")
    ] = None,
    include_revoked: Annotated[
        bool, Query(alias="all", description="also list revoked nodes")
    ] = False,
) -> ListEnvelope[schemas.Node]:
    """The org's active nodes in a stable order, one page at a time."""
    request = admin_pb2.ListNodesRequest(
        limit=limit, cursor=cursor or "", include_revoked=include_revoked
    )
    reply = await coordinator.list_nodes(request, caller)
    return list_envelope(
        caller.request_id,
        [convert.node(node) for node in reply.nodes],
        has_more=reply.has_more,
        next_cursor=reply.next_cursor or None,
    )


@router.get(
    "/{id}",
    summary="Get a node",
    responses=error_responses(400, 401, 403, 404),
)
async def get_node(
    node_id: NodeId, coordinator: CoordinatorDep, caller: CallerDep
) -> Envelope[schemas.Node]:
    """One node of the caller's org; another org's node is not_found."""
    reply = await coordinator.get_node(admin_pb2.GetNodeRequest(id=node_id), caller)
    return envelope(caller.request_id, convert.node(reply))

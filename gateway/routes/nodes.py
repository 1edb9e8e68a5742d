"""``/v1/runmesh/nodes``: the nodes of the caller's org.

Reads need ``runmesh:read``; renaming and revoking need ``runmesh:write``.
The coordinator checks both, and who in the org may change which node.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from gateway import convert, schemas
from gateway.caller import CallerDep
from gateway.coordinator import CoordinatorDep
from gateway.envelope import Envelope, ListEnvelope, envelope, list_envelope
from gateway.errors import error_responses
from gateway.routes.params import NodeId, PageDep
from runmesh.v1 import admin_pb2

router = APIRouter(prefix="/v1/runmesh/nodes", tags=["nodes"])

ConfigFormat = Literal["json", "wg-quick"]

_WG_QUICK_EXAMPLE = """\
# RunMesh node ada-laptop (node_7h3k2m9x)
[Interface]
PrivateKey = <private key of this device: only it holds the key>
Address = 100.64.0.7/16, fd7a:115c:a1e0::7/64
ListenPort = 51820

# build-box (node_p2x9c4v1)
[Peer]
PublicKey = mBvI7xQmN4jzDeTt3jV1SEpvYyv3ra9Zk5yqF0wYbX4=
AllowedIPs = 100.64.0.9/32, fd7a:115c:a1e0::9/128
Endpoint = 198.51.100.4:51820
PersistentKeepalive = 25
"""

_CONFIG_200 = {
    "description": "The configuration as JSON, or as a wg-quick file",
    "content": {
        "text/plain": {"schema": {"type": "string"}, "example": _WG_QUICK_EXAMPLE}
    },
}


@router.get(
    "",
    summary="List nodes",
    responses=error_responses(400, 401, 403),
)
async def list_nodes(
    coordinator: CoordinatorDep,
    caller: CallerDep,
    page: PageDep,
    include_revoked: Annotated[
        bool, Query(alias="all", description="also list revoked nodes")
    ] = False,
    owner: Annotated[
        Literal["me"] | None,
        Query(description="`me`: only the nodes the caller owns"),
    ] = None,
    name: Annotated[
        str | None,
        Query(max_length=63, description="only nodes whose name starts with this"),
    ] = None,
    ip: Annotated[
        str | None,
        Query(
            max_length=64,
            description="only the node holding this mesh address (IPv4 or IPv6)",
            examples=["100.64.0.7"],
        ),
    ] = None,
) -> ListEnvelope[schemas.Node]:
    """The org's active nodes in a stable order, one page at a time."""
    request = admin_pb2.ListNodesRequest(
        limit=page.limit,
        cursor=page.cursor,
        include_revoked=include_revoked,
        owned_by_caller=owner == "me",
        name_prefix=name or "",
        ip=ip or "",
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


@router.get(
    "/{id}/config",
    summary="Get a node's WireGuard configuration",
    response_model=Envelope[schemas.NodeConfig],
    responses={200: _CONFIG_200, **error_responses(400, 401, 403, 404)},
)
async def get_node_config(
    node_id: NodeId,
    coordinator: CoordinatorDep,
    caller: CallerDep,
    request: Request,
    response: Response,
    format: Annotated[
        ConfigFormat | None,
        Query(description="`wg-quick` for the file; default JSON, or per Accept"),
    ] = None,
) -> Envelope[schemas.NodeConfig] | Response:
    """Interface and peers as the coordinator sees them; no private key.

    ``?format=wg-quick``, or ``Accept: text/plain`` without ``format``,
    answers the same configuration as a file for ``wg-quick up``.
    """
    rpc_request = admin_pb2.GetNodeRequest(id=node_id)
    reply = await coordinator.get_node_config(rpc_request, caller)

    # Caches must not hand the file to a client that asked for JSON.
    vary = {"Vary": "Accept"}
    if _wants_wg_quick(format, request.headers.get("accept", "")):
        return PlainTextResponse(reply.wg_quick, headers=vary)
    response.headers.update(vary)
    return envelope(caller.request_id, convert.node_config(reply))


@router.patch(
    "/{id}",
    summary="Rename a node",
    responses=error_responses(400, 401, 403, 404, 409, 413),
)
async def rename_node(
    node_id: NodeId,
    body: schemas.RenameNodeBody,
    coordinator: CoordinatorDep,
    caller: CallerDep,
) -> Envelope[schemas.Node]:
    """Give the node a new name; its peers see it on their next map."""
    request = convert.rename_node_request(node_id, body)
    reply = await coordinator.rename_node(request, caller)
    return envelope(caller.request_id, convert.node(reply))


@router.delete(
    "/{id}",
    summary="Revoke a node",
    responses=error_responses(400, 401, 403, 404, 413),
)
@router.post(
    "/{id}/revoke",
    summary="Revoke a node (same as DELETE)",
    responses=error_responses(400, 401, 403, 404, 413),
)
async def revoke_node(
    node_id: NodeId, coordinator: CoordinatorDep, caller: CallerDep
) -> Envelope[schemas.Node]:
    """Remove the node from the mesh; idempotent, answers the revoked node.

    Takes no body; one sent anyway (``{}``) is ignored.
    """
    request = admin_pb2.RevokeNodeRequest(id=node_id)
    reply = await coordinator.revoke_node(request, caller)
    return envelope(caller.request_id, convert.node(reply))


def _wants_wg_quick(format: ConfigFormat | None, accept: str) -> bool:
    """An explicit ``format`` wins; otherwise text only if preferred to JSON.

    A tie (``*/*``, or no Accept at all) is JSON, the API's default.
    """
    if format is not None:
        return format == "wg-quick"
    return _quality(accept, "text/plain") > _quality(accept, "application/json")


def _quality(accept: str, media_type: str) -> float:
    """The q an Accept header gives ``media_type``; its most specific range wins."""
    kind = media_type.split("/")[0]
    best = (-1, 0.0)  # (specificity, q)
    for item in accept.split(","):
        media_range, *params = (part.strip() for part in item.split(";"))
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range.lower())
        if specificity is not None and specificity > best[0]:
            best = (specificity, _q_of(params))
    return best[1]


def _q_of(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return min(max(q, 0.0), 1.0) if math.isfinite(q) else 0.0
    return 1.0

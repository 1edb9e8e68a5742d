"""Nodes of an org: reading, paging, revocation and presence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import audit, changelog, ipam
from coordinator.accounts import Caller
from coordinator.errors import NotFound
from coordinator.ids import utcnow
from coordinator.models import Node, Org
from coordinator.paging import Cursors, check_limit


@dataclass(frozen=True)
class NodePage:
    nodes: Sequence[Node]
    next_cursor: str
    has_more: bool


async def get_node(session: AsyncSession, caller: Caller, node_id: str) -> Node:
    caller.require("runmesh:read")
    node = await session.scalar(select(Node).where(Node.id == node_id))
    # Another org's node is not_found, never forbidden: ids cannot be probed.
    if node is None or node.org_id != caller.org_id:
        raise NotFound(f"no node {node_id[:64]!r}")
    return node


async def list_nodes(
    session: AsyncSession,
    caller: Caller,
    cursors: Cursors,
    *,
    limit: int,
    cursor: str,
    include_revoked: bool,
) -> NodePage:
    caller.require("runmesh:read")
    limit = check_limit(limit)
    query = select(Node).where(Node.org_id == caller.org_id)
    if not include_revoked:
        query = query.where(Node.revoked_at.is_(None))
    if cursor:
        created_at, last_id = cursors.decode(cursor)
        query = query.where(
            or_(
                Node.created_at > created_at,
                and_(Node.created_at == created_at, Node.id > last_id),
            )
        )
    rows = (
        (
            await session.scalars(
                query.order_by(Node.created_at, Node.id).limit(limit + 1)
            )
        )
        .unique()
        .all()
    )
    has_more = len(rows) > limit
    page = rows[:limit]
    next_cursor = cursors.encode(page[-1].created_at, page[-1].id) if has_more else ""
    return NodePage(nodes=page, next_cursor=next_cursor, has_more=has_more)


async def revoke_node(session: AsyncSession, caller: Caller, node_id: str) -> Node:
    """Revoke a node; revoking a revoked node changes nothing (idempotent)."""
    caller.require("runmesh:write")
    node = await get_node(session, caller, node_id)
    if node.revoked_at is not None:
        return node

    org = await session.scalar(
        select(Org).where(Org.id == node.org_id).with_for_update()
    )
    assert org is not None  # nodes.org_id is a foreign key
    node.revoked_at = utcnow()
    node.online = False
    if node.address is not None:
        ipam.release_address(node.address)
    changelog.record_change(session, org, changelog.ChangeOp.REMOVE, node)
    audit.record(
        session,
        org_id=org.id,
        actor=caller.actor,
        action="node.revoked",
        target_type="node",
        target_id=node.id,
        attributes={"name": node.name},
    )
    return node


async def node_by_key(session: AsyncSession, public_key: str) -> Node | None:
    return await session.scalar(
        select(Node).where(Node.public_key == public_key, Node.revoked_at.is_(None))
    )

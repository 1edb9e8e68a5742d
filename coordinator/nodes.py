"""Nodes of an org: reading, paging, renaming, revocation and counts.

Who may do what: every member of an org sees all of its nodes (names and
peer configuration are what members need to use the mesh). Renaming or
revoking a node needs the ``runmesh:write`` scope and either the admin role
or ownership of the node: members manage their own devices, admins all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from coordinator import accounts, activity, audit, changelog, ipam, naming
from coordinator.accounts import Caller
from coordinator.changes import ChangeOp
from coordinator.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from coordinator.ids import utcnow
from coordinator.models import Address, Node, Org, Role
from coordinator.paging import Cursors, check_limit


@dataclass(frozen=True)
class NodeFilter:
    include_revoked: bool = False
    owner_user_id: str | None = None
    name_prefix: str = ""
    ip: str = ""


@dataclass(frozen=True)
class Overview:
    total: int
    online: int
    offline: int
    revoked: int
    by_os: dict[str, int]


@dataclass(frozen=True)
class NodePage:
    nodes: Sequence[Node]
    next_cursor: str
    has_more: bool


def get_node(session: Session, caller: Caller, node_id: str) -> Node:
    caller.require("runmesh:read")
    node = session.scalar(select(Node).where(Node.id == node_id))
    # Another org's node is not_found, never forbidden: ids cannot be probed.
    if node is None or node.org_id != caller.org_id:
        raise NotFound(f"no node {node_id[:64]!r}")
    return node


def list_nodes(
    session: Session,
    caller: Caller,
    cursors: Cursors,
    *,
    limit: int,
    cursor: str,
    where: NodeFilter,
) -> NodePage:
    caller.require("runmesh:read")
    limit = check_limit(limit)
    query = _filtered(select(Node).where(Node.org_id == caller.org_id), where)
    scope = f"nodes:{caller.org_id}:{where!r}"
    if cursor:
        created_at, last_id = cursors.decode(scope, cursor)
        query = query.where(
            or_(
                Node.created_at > created_at,
                and_(Node.created_at == created_at, Node.id > last_id),
            )
        )
    query = query.order_by(Node.created_at, Node.id).limit(limit + 1)
    rows = session.scalars(query).unique().all()
    has_more = len(rows) > limit
    page = rows[:limit]
    next_cursor = (
        cursors.encode(scope, page[-1].created_at, page[-1].id) if has_more else ""
    )
    return NodePage(nodes=page, next_cursor=next_cursor, has_more=has_more)


def _filtered(query: Select[Node], where: NodeFilter) -> Select[Node]:
    if not where.include_revoked:
        query = query.where(Node.revoked_at.is_(None))
    if where.owner_user_id is not None:
        query = query.where(Node.owner_user_id == where.owner_user_id)
    if where.name_prefix:
        if len(where.name_prefix) > naming.MAX_LENGTH:
            raise InvalidArgument("name filter is longer than 63 characters")
        # Names are DNS labels: no LIKE wildcards can be in a valid one, and
        # an invalid one matches nothing, so escaping is all that is needed.
        pattern = where.name_prefix.replace("\\", "\\\\")
        pattern = pattern.replace("%", "\\%").replace("_", "\\_")
        query = query.where(Node.name.like(pattern + "%", escape="\\"))
    if where.ip:
        try:
            parsed = ipaddress.ip_address(where.ip)
        except ValueError:
            raise InvalidArgument(
                f"ip {where.ip[:64]!r} is not an IP address"
            ) from None
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id:
            # Would match nothing: mesh addresses have no zone.
            raise InvalidArgument(
                f"ip {where.ip[:64]!r} has a zone; mesh addresses have none"
            )
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
            parsed = parsed.ipv4_mapped  # ::ffff:100.64.0.1 is that IPv4 address
        address = str(parsed)
        query = query.join(Address, Address.node_id == Node.id).where(
            or_(Address.ipv4 == address, Address.ipv6 == address)
        )
    return query


def overview(session: Session, caller: Caller) -> Overview:
    caller.require("runmesh:read")
    # Plain columns, no subquery of the whole row: building a subquery of
    # every Node column cost more than running the two queries.
    in_org = Node.org_id == caller.org_id
    revoked = Node.revoked_at.is_not(None)
    total, revoked_count, online = session.execute(
        select(
            func.count(),
            func.count().filter(revoked),
            func.count().filter(~revoked & Node.online),
        ).where(in_org)
    ).one()
    by_os = session.execute(
        select(Node.os, func.count()).where(in_org, ~revoked).group_by(Node.os)
    )
    return Overview(
        total=int(total),
        online=int(online),
        offline=int(total) - int(revoked_count) - int(online),
        revoked=int(revoked_count),
        by_os={os or "unknown": int(n) for os, n in by_os.all()},
    )


def _require_manage(caller: Caller, node: Node) -> None:
    caller.require("runmesh:write")
    if caller.role != Role.ADMIN and node.owner_user_id != caller.user_id:
        raise PermissionDenied("only an admin or the node's owner may change it")


def rename_node(session: Session, caller: Caller, node_id: str, name: str) -> Node:
    node = get_node(session, caller, node_id)
    _require_manage(caller, node)
    naming.check_name(name)
    if node.revoked_at is not None:
        raise Conflict("a revoked node cannot be renamed")
    if name == node.name:
        return node  # nothing changes, so no version is spent
    taken = session.scalar(
        select(Node.id).where(
            Node.org_id == node.org_id,
            Node.name == name,
            Node.revoked_at.is_(None),
        )
    )
    if taken is not None:
        raise Conflict(f"an active node is already named {name!r}")

    org = _org_for_update(session, node.org_id)
    old = node.name
    node.name = name
    changelog.record_change(session, org, ChangeOp.UPSERT, node)
    audit.record(
        session,
        org_id=org.id,
        actor=caller.actor,
        action="node.renamed",
        target_type="node",
        target_id=node.id,
        attributes={"from": old, "to": name},
    )
    activity.record(
        session, node, activity.EventType.RENAMED, f"renamed from {old} to {name}"
    )
    return node


def _org_for_update(session: Session, org_id: str) -> Org:
    org = accounts.orgs_for_update(session, [org_id]).get(org_id)
    assert org is not None  # nodes.org_id is a foreign key
    return org


def revoke_node(session: Session, caller: Caller, node_id: str) -> Node:
    """Revoke a node; revoking a revoked node changes nothing (idempotent)."""
    node = get_node(session, caller, node_id)
    _require_manage(caller, node)
    if node.revoked_at is not None:
        return node

    org = _org_for_update(session, node.org_id)
    node.revoked_at = utcnow()
    node.online = False
    if node.address is not None:
        ipam.release_address(node.address)
    changelog.record_change(session, org, ChangeOp.REMOVE, node)
    audit.record(
        session,
        org_id=org.id,
        actor=caller.actor,
        action="node.revoked",
        target_type="node",
        target_id=node.id,
        attributes={"name": node.name},
    )
    activity.record(session, node, activity.EventType.REVOKED, "removed from the mesh")
    return node


def node_by_key(session: Session, public_key: str) -> Node | None:
    return session.scalar(
        select(Node).where(Node.public_key == public_key, Node.revoked_at.is_(None))
    )


def rotate_key(session: Session, node_id: str, old_key: str, new_key: str) -> Node:
    """Switch a node to a new key it has proven it holds.

    Peers see the old key removed and the new one added in one delta, so
    no peer keeps the old key.
    """
    node = session.get(Node, node_id)
    if node is None or node.revoked_at is not None or node.public_key != old_key:
        raise PermissionDenied("the node or its key is no longer valid")
    if node_by_key(session, new_key) is not None:
        raise Conflict("the new key already belongs to an active node")
    org = _org_for_update(session, node.org_id)
    node.public_key = new_key
    changelog.record_change(session, org, ChangeOp.REKEY, node, old_public_key=old_key)
    audit.record(
        session,
        org_id=org.id,
        actor=audit.Actor("node", node.id),
        action="node.key_rotated",
        target_type="node",
        target_id=node.id,
        attributes={"from": old_key, "to": new_key},
    )
    activity.record(session, node, activity.EventType.KEY_ROTATED, "rotated its key")
    return node

"""The mesh version and its change log.

Every change that affects a peer map bumps the org's ``mesh_version`` and
writes one ``mesh_changes`` row in the same transaction as the change. The
streams are fed from this log, not from in-process callbacks, so whatever
commits a change (this process, another replica, the operator's CLI) the
streams learn of it the same way, and a node that was away gets exactly the
versions it missed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator import peermap
from coordinator.changes import Change, ChangeOp
from coordinator.ids import utcnow
from coordinator.models import MeshChange, Node, Org
from runmesh.v1 import node_pb2


def record_change(
    session: Session,
    org: Org,
    op: ChangeOp,
    node: Node,
    old_public_key: str | None = None,
) -> int:
    """Bump the org's version and log the change; returns the new version.

    The caller holds the org row for writing (see ``ipam.allocate_address``).
    A REKEY names the key being replaced in ``old_public_key``.
    """
    org.mesh_version += 1
    peer = peermap.peer_of(node) if op != ChangeOp.REMOVE else None
    key = old_public_key if op == ChangeOp.REKEY and old_public_key else node.public_key
    session.add(
        MeshChange(
            org_id=org.id,
            version=org.mesh_version,
            op=op,
            node_id=node.id,
            public_key=key,
            peer=peer.SerializeToString() if peer is not None else None,
            created_at=utcnow(),
        )
    )
    return org.mesh_version


def changes_since(
    session: Session, org_id: str, after_version: int, limit: int = 10_000
) -> list[Change]:
    rows = session.scalars(
        select(MeshChange)
        .where(MeshChange.org_id == org_id, MeshChange.version > after_version)
        .order_by(MeshChange.version)
        .limit(limit)
    )
    return [_change_of(row) for row in rows]


def _change_of(row: MeshChange) -> Change:
    peer = None
    if row.peer is not None:
        peer = node_pb2.Peer.FromString(row.peer)
    return Change(
        version=row.version,
        op=ChangeOp(row.op),
        node_id=row.node_id,
        public_key=row.public_key,
        peer=peer,
    )

"""The mesh version and its change log.

Every change that affects a peer map bumps the org's ``mesh_version`` and
writes one ``mesh_changes`` row in the same transaction as the change. The
streams are fed from this log, not from in-process callbacks, so whatever
commits a change (this process, another replica, the operator's CLI) the
streams learn of it the same way, and a node that was away gets exactly the
versions it missed.

A change this process committed is the very row it wrote, so reading it
back is a round trip for nothing (2-3 ms on the path of every delta, here).
``RecentCommits`` keeps the rows of this process's last commits; a feed
takes its next changes from there when they follow its version without a
gap, and reads the log in every other case.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

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
    change = Change(org.mesh_version, op, node.id, key, peer)
    session.info.setdefault(_UNCOMMITTED, []).append((org.id, change))
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


_UNCOMMITTED = "runmesh.uncommitted_changes"


class RecentCommits:
    """The change rows this process committed lately, by org and version.

    Filled from the writers' threads after each commit (see
    ``remember_commits``), read by the feeds on the event loop.
    """

    def __init__(self, per_org: int = 1024) -> None:
        self._per_org = per_org
        self._lock = threading.Lock()
        self._orgs: dict[str, collections.OrderedDict[int, Change]] = {}

    def add(self, changes: Iterable[tuple[str, Change]]) -> None:
        with self._lock:
            for org_id, change in changes:
                kept = self._orgs.setdefault(org_id, collections.OrderedDict())
                kept[change.version] = change
                while len(kept) > self._per_org:
                    kept.popitem(last=False)

    def following(self, org_id: str, version: int) -> list[Change]:
        """The changes right after ``version`` with no gap (maybe none).

        Whatever is at or below ``version`` has been delivered and is
        dropped. An empty answer says nothing about the log: read it.
        """
        with self._lock:
            kept = self._orgs.get(org_id)
            if not kept:
                return []
            for old in [v for v in kept if v <= version]:
                del kept[old]
            run: list[Change] = []
            while (change := kept.get(version + len(run) + 1)) is not None:
                run.append(change)
            return run


def remember_commits(sessions: sessionmaker[Session], recent: RecentCommits) -> None:
    """Keep in ``recent`` what each session made by ``sessions`` commits.

    Only a commit that succeeded adds anything: a unit of work that rolled
    back (and may be retried in a fresh session) leaves nothing behind.
    """

    @event.listens_for(sessions, "after_commit")
    def _committed(session: Session) -> None:
        recent.add(session.info.pop(_UNCOMMITTED, ()))

    @event.listens_for(sessions, "after_rollback")
    def _rolled_back(session: Session) -> None:
        session.info.pop(_UNCOMMITTED, None)

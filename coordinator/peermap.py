"""Peer maps and deltas: what each node's WireGuard should hold.

A node's map is every other active node of its org as a peer, plus the node
itself. Deltas are composed from the change log: peers added or changed are
sent in full, removed peers by key and explicitly. An empty removal list
means "nothing removed", never "no peers" — a node must not read silence as
an instruction to drop everything.

A delta that is the same for every recipient is built and serialised once;
each recipient recognises its own key among the upserts as a change to
itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.models import Node, Org
from runmesh.v1 import node_pb2

if TYPE_CHECKING:
    from coordinator.changelog import Change

DEFAULT_KEEPALIVE = 25


def peer_of(node: Node) -> node_pb2.Peer:
    address = node.address
    allowed: list[str] = []
    if address is not None:
        allowed = [f"{address.ipv4}/32", f"{address.ipv6}/128"]
    return node_pb2.Peer(
        node_id=node.id,
        name=node.name,
        public_key=node.public_key,
        allowed_ips=allowed,
        endpoints=list(node.endpoints or []),
        persistent_keepalive=DEFAULT_KEEPALIVE,
    )


def self_of(node: Node, org: Org) -> node_pb2.SelfConfig:
    v4 = ipaddress.IPv4Network(org.ipv4_prefix)
    v6 = ipaddress.IPv6Network(org.ipv6_prefix)
    addresses: list[str] = []
    if node.address is not None:
        addresses = [
            f"{node.address.ipv4}/{v4.prefixlen}",
            f"{node.address.ipv6}/{v6.prefixlen}",
        ]
    return node_pb2.SelfConfig(
        node_id=node.id,
        name=node.name,
        public_key=node.public_key,
        addresses=addresses,
    )


async def active_nodes(session: AsyncSession, org_id: str) -> Sequence[Node]:
    result = await session.scalars(
        select(Node)
        .where(Node.org_id == org_id, Node.revoked_at.is_(None))
        .order_by(Node.created_at, Node.id)
    )
    return result.unique().all()


async def full_map(session: AsyncSession, org: Org, node: Node) -> node_pb2.PeerMap:
    """The whole map of ``node`` at the org's current version.

    Read in the same transaction as ``org.mesh_version`` so the version and
    the peers agree.
    """
    peers = [peer_of(n) for n in await active_nodes(session, org.id) if n.id != node.id]
    return node_pb2.PeerMap(
        version=org.mesh_version, self=self_of(node, org), peers=peers
    )


def compose_delta(from_version: int, changes: Iterable[Change]) -> node_pb2.PeerDelta:
    """One delta covering consecutive changes; the last change per key wins."""
    latest: dict[str, Change] = {}
    version = from_version
    for change in changes:
        latest.pop(change.public_key, None)
        latest[change.public_key] = change
        version = max(version, change.version)
    delta = node_pb2.PeerDelta(from_version=from_version, version=version)
    for key, change in latest.items():
        if change.peer is not None:
            delta.upserted.append(change.peer)
        else:
            delta.removed.append(key)
    return delta

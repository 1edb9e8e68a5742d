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
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.changes import Change
from coordinator.models import Node, Org
from runmesh.v1 import node_pb2

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
        online=node.online,
    )


@dataclass(frozen=True)
class PrefixLengths:
    """The org's prefix lengths: a node's interface addresses carry them so
    the kernel routes the whole mesh to the WireGuard interface."""

    ipv4: int
    ipv6: int


def prefix_lengths(org: Org) -> PrefixLengths:
    return PrefixLengths(
        ipaddress.IPv4Network(org.ipv4_prefix).prefixlen,
        ipaddress.IPv6Network(org.ipv6_prefix).prefixlen,
    )


def self_from_peer(peer: node_pb2.Peer, prefixes: PrefixLengths) -> node_pb2.SelfConfig:
    addresses = []
    for cidr in peer.allowed_ips:
        host = cidr.split("/")[0]
        length = prefixes.ipv6 if ":" in host else prefixes.ipv4
        addresses.append(f"{host}/{length}")
    return node_pb2.SelfConfig(
        node_id=peer.node_id,
        name=peer.name,
        public_key=peer.public_key,
        addresses=addresses,
    )


def self_of(node: Node, org: Org) -> node_pb2.SelfConfig:
    return self_from_peer(peer_of(node), prefix_lengths(org))


def active_nodes(session: Session, org_id: str) -> Sequence[Node]:
    result = session.scalars(
        select(Node)
        .where(Node.org_id == org_id, Node.revoked_at.is_(None))
        .order_by(Node.created_at, Node.id)
    )
    return result.unique().all()


def compose_delta(from_version: int, changes: Iterable[Change]) -> node_pb2.PeerDelta:
    """One delta covering consecutive changes; the last word per key wins.

    A key change is two words: the old key is removed, the new one added.
    """
    latest: dict[str, node_pb2.Peer | None] = {}
    version = from_version
    for change in changes:
        for key, peer in _words(change):
            latest.pop(key, None)
            latest[key] = peer
        version = max(version, change.version)
    delta = node_pb2.PeerDelta(from_version=from_version, version=version)
    for key, peer in latest.items():
        if peer is not None:
            delta.upserted.append(peer)
        else:
            delta.removed.append(key)
    return delta


def _words(change: Change) -> list[tuple[str, node_pb2.Peer | None]]:
    if change.peer is None:
        return [(change.public_key, None)]
    if change.peer.public_key != change.public_key:  # a key change
        return [(change.public_key, None), (change.peer.public_key, change.peer)]
    return [(change.public_key, change.peer)]

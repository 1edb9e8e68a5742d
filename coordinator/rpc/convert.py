"""Rows of the database as runmesh.v1 messages."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.models import Node
from runmesh.v1 import node_pb2


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def node_status(node: Node) -> node_pb2.NodeStatus:
    if node.revoked_at is not None:
        return node_pb2.NODE_STATUS_REVOKED
    return node_pb2.NODE_STATUS_ONLINE if node.online else node_pb2.NODE_STATUS_OFFLINE


def node_message(node: Node) -> node_pb2.Node:
    # A revoked node shows its addresses during the quarantine; once its
    # slot is reused by another node it has none.
    address = node.address
    return node_pb2.Node(
        id=node.id,
        org_id=node.org_id,
        name=node.name,
        device_label=node.device_label,
        hostname=node.hostname,
        os=node.os,
        app_version=node.app_version,
        public_key=node.public_key,
        ipv4=address.ipv4 if address else "",
        ipv6=address.ipv6 if address else "",
        status=node_status(node),
        owner_user_id=node.owner_user_id,
        endpoints=list(node.endpoints or []),
        created_at=timestamp(node.created_at),
        last_seen_at=timestamp(node.last_seen_at),
        revoked_at=timestamp(node.revoked_at),
    )

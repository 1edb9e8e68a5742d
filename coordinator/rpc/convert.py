"""Rows of the database as runmesh.v1 messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.activity import RESOURCE_TYPE
from coordinator.models import AuditEvent, DeviceActivity, Node
from coordinator.nodeconfig import PRIVATE_KEY_PLACEHOLDER, NodeConfig
from runmesh.v1 import admin_pb2, node_pb2

UTC = dt.UTC


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


def struct(values: dict[str, Any]) -> Struct:
    message = Struct()
    message.update(values)
    return message


def config_message(config: NodeConfig) -> admin_pb2.NodeConfig:
    return admin_pb2.NodeConfig(
        node_id=config.node_id,
        addresses=list(config.addresses),
        listen_port=config.listen_port,
        private_key_placeholder=PRIVATE_KEY_PLACEHOLDER,
        peers=[
            admin_pb2.ConfigPeer(
                node_id=p.node_id,
                name=p.name,
                public_key=p.public_key,
                allowed_ips=list(p.allowed_ips),
                endpoint=p.endpoint,
                persistent_keepalive=p.persistent_keepalive,
            )
            for p in config.peers
        ],
        wg_quick=config.wg_quick(),
    )


def audit_message(event: AuditEvent) -> admin_pb2.AuditEvent:
    return admin_pb2.AuditEvent(
        id=event.id,
        org_id=event.org_id,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        attributes=struct(event.attributes or {}),
        created_at=timestamp(event.created_at),
    )


def activity_message(item: DeviceActivity) -> admin_pb2.DeviceActivity:
    return admin_pb2.DeviceActivity(
        id=item.id,
        resource_type=RESOURCE_TYPE,
        resource_id=item.node_id,
        event_type=item.event_type,
        severity=item.severity,
        status=item.status,
        title=item.title,
        summary=item.summary,
        attributes=struct(item.attributes or {}),
        created_at=timestamp(item.created_at),
    )

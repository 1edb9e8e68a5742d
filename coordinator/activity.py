"""A node's own activity feed: connects, disconnects, endpoint changes,
renames and revocation, as the device's owner would want to read them."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy.orm import Session

from coordinator.ids import new_id, utcnow
from coordinator.models import DeviceActivity, Node

RESOURCE_TYPE = "runmesh_device"


class EventType(enum.StrEnum):
    CONNECTED = "runmesh.node.connected"
    DISCONNECTED = "runmesh.node.disconnected"
    ENDPOINT_CHANGED = "runmesh.node.endpoint_changed"
    RENAMED = "runmesh.node.renamed"
    REVOKED = "runmesh.node.revoked"
    KEY_ROTATED = "runmesh.node.key_rotated"


_WORDING: dict[EventType, tuple[str, str]] = {
    EventType.CONNECTED: ("info", "Device connected"),
    EventType.DISCONNECTED: ("warning", "Device disconnected"),
    EventType.ENDPOINT_CHANGED: ("info", "Device endpoints changed"),
    EventType.RENAMED: ("info", "Device renamed"),
    EventType.REVOKED: ("warning", "Device revoked"),
    EventType.KEY_ROTATED: ("info", "Device key rotated"),
}


def node_status(node: Node) -> str:
    if node.revoked_at is not None:
        return "revoked"
    return "online" if node.online else "offline"


def record(
    session: Session,
    node: Node,
    event: EventType,
    summary: str,
    attributes: dict[str, Any] | None = None,
) -> None:
    severity, title = _WORDING[event]
    session.add(
        DeviceActivity(
            id=new_id("act"),
            org_id=node.org_id,
            node_id=node.id,
            event_type=event,
            severity=severity,
            status=node_status(node),
            title=title,
            summary=summary[:500],
            attributes=attributes or {},
            created_at=utcnow(),
        )
    )

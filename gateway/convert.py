"""Between the REST shapes of ``gateway.schemas`` and the coordinator's protos.

Proto3 has no null for strings: an absent optional field goes out as "" and
the coordinator treats "" as "not given". Timestamps do have presence, and an
unset one comes back as JSON null.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from google.protobuf import json_format, struct_pb2
from pydantic import JsonValue

from gateway import schemas
from gateway.errors import UnexpectedReply
from runmesh.v1 import admin_pb2, mesh_pb2, node_pb2

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The byOs key for nodes that reported no operating system.
UNKNOWN_OS = "unknown"

_NODE_STATUS: Mapping[int, schemas.NodeStatus] = {
    node_pb2.NODE_STATUS_ONLINE: "online",
    node_pb2.NODE_STATUS_OFFLINE: "offline",
    node_pb2.NODE_STATUS_REVOKED: "revoked",
}

_LINK_STATUS: Mapping[int, schemas.LinkStatus] = {
    mesh_pb2.LINK_STATUS_PENDING: "pending",
    mesh_pb2.LINK_STATUS_APPROVED: "approved",
    mesh_pb2.LINK_STATUS_EXPIRED: "expired",
    mesh_pb2.LINK_STATUS_DENIED: "denied",
}


class _Timestamp(Protocol):
    """The two fields of ``google.protobuf.Timestamp`` this module reads."""

    seconds: int
    nanos: int


class _HasFields(Protocol):
    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 (protobuf's name)


# ---- requests ----


def start_link_request(body: schemas.StartLinkBody) -> mesh_pb2.StartLinkRequest:
    request = mesh_pb2.StartLinkRequest(
        public_key=body.public_key,
        device_label=body.device_label or "",
        os=body.os or "",
        app_version=body.app_version or "",
        hostname=body.hostname or "",
    )
    if body.client_metadata is not None:
        request.client_metadata.update(body.client_metadata)
    return request


def poll_link_request(body: schemas.PollLinkBody) -> mesh_pb2.PollLinkRequest:
    return mesh_pb2.PollLinkRequest(code=body.code, public_key=body.public_key)


def approve_link_request(body: schemas.ApproveLinkBody) -> admin_pb2.ApproveLinkRequest:
    return admin_pb2.ApproveLinkRequest(code=body.code, name=body.name or "")


def rename_node_request(
    node_id: str, body: schemas.RenameNodeBody
) -> admin_pb2.RenameNodeRequest:
    return admin_pb2.RenameNodeRequest(id=node_id, name=body.name)


# ---- replies ----


def time_of(message: _HasFields, field: str) -> datetime | None:
    """The timestamp ``field`` of ``message`` as an aware UTC datetime.

    An unset field is None, and so is the epoch itself: no RunMesh event
    happened in 1970, but a coordinator that fills a Timestamp with its
    default value means "never".
    """
    if not message.HasField(field):
        return None
    stamp: _Timestamp = getattr(message, field)
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def node(reply: node_pb2.Node) -> schemas.Node:
    return schemas.Node(
        id=reply.id,
        org_id=reply.org_id,
        name=reply.name,
        device_label=reply.device_label,
        hostname=reply.hostname,
        os=reply.os,
        app_version=reply.app_version,
        public_key=reply.public_key,
        ipv4=reply.ipv4,
        ipv6=reply.ipv6,
        status=_known(_NODE_STATUS, reply.status, "node status"),
        owner_user_id=reply.owner_user_id,
        endpoints=list(reply.endpoints),
        created_at=time_of(reply, "created_at"),
        last_seen_at=time_of(reply, "last_seen_at"),
        revoked_at=time_of(reply, "revoked_at"),
    )


def link_started(reply: mesh_pb2.StartLinkResponse) -> schemas.LinkStarted:
    return schemas.LinkStarted(
        code=reply.code,
        url=reply.url,
        expires_at=time_of(reply, "expires_at"),
        interval=reply.interval_seconds,
    )


def link_state(reply: mesh_pb2.PollLinkResponse) -> schemas.LinkState:
    status = _known(_LINK_STATUS, reply.status, "link status")
    approved = status == "approved"
    return schemas.LinkState(
        status=status,
        expires_at=time_of(reply, "expires_at"),
        interval=reply.interval_seconds,
        node=node(reply.node) if approved and reply.HasField("node") else None,
        coordinator=(
            coordinator_endpoint(reply.coordinator)
            if approved and reply.HasField("coordinator")
            else None
        ),
    )


def coordinator_endpoint(
    reply: mesh_pb2.CoordinatorEndpoint,
) -> schemas.CoordinatorEndpoint:
    return schemas.CoordinatorEndpoint(target=reply.target, public_key=reply.public_key)


def overview(reply: admin_pb2.Overview) -> schemas.Overview:
    by_os: dict[str, int] = {}
    for os, count in reply.by_os.items():
        # The coordinator counts nodes that gave no OS under "".
        name = os or UNKNOWN_OS
        by_os[name] = by_os.get(name, 0) + count
    return schemas.Overview(
        total=reply.total,
        online=reply.online,
        offline=reply.offline,
        revoked=reply.revoked,
        by_os=by_os,
    )


def node_config(reply: admin_pb2.NodeConfig) -> schemas.NodeConfig:
    return schemas.NodeConfig(
        node_id=reply.node_id,
        addresses=list(reply.addresses),
        listen_port=reply.listen_port,
        private_key=reply.private_key_placeholder,
        peers=[config_peer(peer) for peer in reply.peers],
    )


def config_peer(reply: admin_pb2.ConfigPeer) -> schemas.ConfigPeer:
    return schemas.ConfigPeer(
        node_id=reply.node_id,
        name=reply.name,
        public_key=reply.public_key,
        allowed_ips=list(reply.allowed_ips),
        endpoint=reply.endpoint or None,
        persistent_keepalive=reply.persistent_keepalive,
    )


def audit_event(reply: admin_pb2.AuditEvent) -> schemas.AuditEvent:
    return schemas.AuditEvent(
        id=reply.id,
        org_id=reply.org_id,
        actor_type=reply.actor_type,
        actor_id=reply.actor_id,
        action=reply.action,
        target_type=reply.target_type,
        target_id=reply.target_id,
        attributes=attributes(reply.attributes),
        created_at=time_of(reply, "created_at"),
    )


def device_activity(reply: admin_pb2.DeviceActivity) -> schemas.DeviceActivity:
    return schemas.DeviceActivity(
        id=reply.id,
        resource_type=reply.resource_type,
        resource_id=reply.resource_id,
        event_type=reply.event_type,
        severity=reply.severity,
        status=reply.status,
        title=reply.title,
        summary=reply.summary,
        attributes=attributes(reply.attributes),
        created_at=time_of(reply, "created_at"),
    )


def attributes(struct: struct_pb2.Struct) -> dict[str, JsonValue]:
    """A Struct as a JSON object; an unset one is ``{}``."""
    value = _whole_numbers(json_format.MessageToDict(struct))
    return value if isinstance(value, dict) else {}


def _whole_numbers(value: JsonValue) -> JsonValue:
    # A Struct holds every number as a double, so a port 51820 would show as
    # 51820.0; numbers that are whole and exact in a double go out as ints.
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def _known(table: Mapping[int, T], value: int, what: str) -> T:
    # UNSPECIFIED or a value added to the proto after this gateway was built:
    # guessing would tell a device something false, so it is an internal error.
    try:
        return table[value]
    except KeyError:
        raise UnexpectedReply(f"unknown {what} {value}") from None

"""The JSON shapes of the REST API: request bodies and response data.

Field names are camelCase on the wire (aliases) and snake_case in Python.
Validation here is only shape: types, required fields, length caps and the
characters a text may hold, which keep junk from reaching the coordinator.
Whether a key is really 32 bytes of base64, or a name a valid DNS label, is
the coordinator's call.

``clientMetadata`` travels as a ``google.protobuf.Struct``, so it is held to
what a Struct carries safely: shallow (protobuf refuses to decode messages
nested past its recursion limit, about 33 JSON levels of a Struct), string
keys, and numbers a double holds without surprise.

Unknown fields in a body are ignored, not refused, so a newer client keeps
working against an older gateway.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

MAX_CLIENT_METADATA_BYTES = 4 * 1024
# The metadata object itself is the first level.
MAX_CLIENT_METADATA_DEPTH = 8
MAX_CLIENT_METADATA_KEY_LENGTH = 64
# Well inside a double's exact integers (2^53), and nothing a device reports
# about itself is larger.
MAX_CLIENT_METADATA_NUMBER = 1e15

_EXAMPLE_KEY = "mBvI7xQmN4jzDeTt3jV1SEpvYyv3ra9Zk5yqF0wYbX4="
_EXAMPLE_TIME = "2026-12-03T18:24:39.123Z"


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: ``2026-12-03T18:24:39.123Z``.

    Truncated, not rounded, so a time is never shown later than it was.
    """
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


UtcTime = Annotated[
    datetime,
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": [_EXAMPLE_TIME]}
    ),
]


# What a device sends in StartLink and PollLink, checked the same way in both.
DevicePublicKey = Annotated[
    str,
    Field(
        min_length=44,
        max_length=44,
        pattern=r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
        description="standard base64 of the 32-byte X25519 public key",
        examples=[_EXAMPLE_KEY],
    ),
]
# A link code as PollLink and ApproveLink take it.
LinkCode = Annotated[
    str,
    Field(
        min_length=6,
        max_length=16,
        description="the 6-character code; case, spaces and hyphens are ignored",
        examples=["KX7T9Q"],
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
    )


# ---- text ----

# C0, DEL and C1 (Unicode category Cc): a NUL or an escape sequence in a label
# ends up in logs, terminals and approval screens.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone surrogates cannot be encoded as UTF-8, which a protobuf string must be.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Body(_Model):
    """A request body: every string field holds plain text.

    One validator for all of them, so a field added later is covered too.
    """

    @field_validator("*")
    @classmethod
    def _plain_text(cls, value: object) -> object:
        # pydantic itself refuses a lone surrogate in a str field.
        if isinstance(value, str) and _CONTROL_CHARACTER.search(value):
            raise ValueError("must not contain control characters")
        return value


# ---- request bodies ----


def _json_size(value: JsonValue) -> int:
    # ASCII-escaped and compact, so characters are bytes and spacing is free.
    return len(json.dumps(value, separators=(",", ":")))


def _check_metadata(value: object, depth: int = 1) -> None:
    """Raise ValueError for what a Struct cannot carry safely.

    Runs on the parsed JSON before pydantic's own walk, so a hostile depth is
    refused here, in one short sentence, after looking at most nine levels.
    """
    if isinstance(value, dict):
        _check_depth(depth)
        for key, item in value.items():
            _check_key(key)
            _check_metadata(item, depth + 1)
    elif isinstance(value, list):
        _check_depth(depth)
        for item in value:
            _check_metadata(item, depth + 1)
    elif isinstance(value, str):
        _check_unicode(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value)


def _check_depth(depth: int) -> None:
    if depth > MAX_CLIENT_METADATA_DEPTH:
        raise ValueError(f"nested deeper than {MAX_CLIENT_METADATA_DEPTH} levels")


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise ValueError("keys must be strings")
    if len(key) > MAX_CLIENT_METADATA_KEY_LENGTH:
        raise ValueError(
            f"keys must be at most {MAX_CLIENT_METADATA_KEY_LENGTH} characters"
        )
    if _CONTROL_CHARACTER.search(key):
        raise ValueError("keys must not contain control characters")
    _check_unicode(key)


def _check_unicode(text: str) -> None:
    if _SURROGATE.search(text):
        raise ValueError("strings must be valid Unicode")


def _check_number(number: float) -> None:
    # JSON's 1e400 parses as infinity, and a 400-digit integer overflows the
    # double a Struct holds it in (math.isfinite would overflow on it too).
    finite = not isinstance(number, float) or math.isfinite(number)
    if not finite or abs(number) > MAX_CLIENT_METADATA_NUMBER:
        raise ValueError("numbers must be finite and within ±1e15")


class StartLinkBody(_Body):
    """A device asks to join: its public key and how to show it to approvers."""

    public_key: DevicePublicKey
    device_label: str | None = Field(None, max_length=256, examples=["Ada's MacBook"])
    os: str | None = Field(None, max_length=64, examples=["macos"])
    app_version: str | None = Field(None, max_length=64, examples=["1.4.2"])
    hostname: str | None = Field(None, max_length=256, examples=["adas-mbp"])
    client_metadata: dict[str, JsonValue] | None = Field(
        None,
        description=f"Free-form, at most {MAX_CLIENT_METADATA_BYTES} bytes as JSON, "
        f"{MAX_CLIENT_METADATA_DEPTH} levels deep, keys of at most "
        f"{MAX_CLIENT_METADATA_KEY_LENGTH} characters, numbers within ±1e15. "
        "Numbers travel as doubles.",
        examples=[{"arch": "arm64"}],
    )

    @field_validator("client_metadata", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        _check_metadata(value)
        return value

    @field_validator("client_metadata")
    @classmethod
    def _small(cls, value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        # Stored with the link request and shown to approvers: keep it small.
        if value is not None and _json_size(value) > MAX_CLIENT_METADATA_BYTES:
            raise ValueError(
                f"must be at most {MAX_CLIENT_METADATA_BYTES} bytes as JSON"
            )
        return value


class PollLinkBody(_Body):
    """A device asks whether its code was approved."""

    code: LinkCode
    public_key: DevicePublicKey


class ApproveLinkBody(_Body):
    """A member approves a code shown on a device."""

    code: LinkCode
    name: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="DNS label for the node; derived from the device label if absent",
        examples=["ada-laptop"],
    )


# ---- response data ----

NodeStatus = Literal["online", "offline", "revoked"]
LinkStatus = Literal["pending", "approved", "expired", "denied"]


class Node(_Model):
    """A device in the mesh."""

    id: str = Field(examples=["node_7h3k2m9x"])
    org_id: str = Field(examples=["org_q4r8t2"])
    name: str = Field(examples=["ada-laptop"])
    device_label: str = Field(examples=["Ada's MacBook"])
    hostname: str = Field(examples=["adas-mbp"])
    os: str = Field(examples=["macos"])
    app_version: str = Field(examples=["1.4.2"])
    public_key: str = Field(examples=[_EXAMPLE_KEY])
    ipv4: str = Field(examples=["100.64.0.7"])
    ipv6: str = Field(examples=["fd7a:115c:a1e0::7"])
    status: NodeStatus
    owner_user_id: str = Field(examples=["user_m2n6p1"])
    endpoints: list[str] = Field(examples=[["203.0.113.7:51820"]])
    created_at: UtcTime | None
    last_seen_at: UtcTime | None
    revoked_at: UtcTime | None


class LinkStarted(_Model):
    code: str = Field(examples=["KX7T9Q"])
    url: str = Field(examples=["https://mesh.example.com/link/KX7T9Q"])
    expires_at: UtcTime | None
    interval: int = Field(description="seconds to wait between two polls", examples=[5])


class CoordinatorEndpoint(_Model):
    target: str = Field(
        description="host:port to open Sync at", examples=["mesh.example.com:50443"]
    )
    public_key: str = Field(
        description="the coordinator's X25519 key; box the challenge answer to it",
        examples=[_EXAMPLE_KEY],
    )


class LinkState(_Model):
    status: LinkStatus
    expires_at: UtcTime | None
    interval: int = Field(description="seconds to wait between two polls", examples=[5])
    node: Node | None = Field(None, description="null unless status is approved")
    coordinator: CoordinatorEndpoint | None = Field(
        None, description="null unless status is approved"
    )


class RenameNodeBody(_Body):
    """A new name for a node."""

    name: str = Field(
        min_length=1,
        max_length=63,
        description="DNS label: lowercase a-z, 0-9 and hyphens, unique in the org",
        examples=["ada-laptop"],
    )


class Overview(_Model):
    """Counts of the org's nodes."""

    total: int = Field(examples=[12])
    online: int = Field(examples=[7])
    offline: int = Field(examples=[3])
    revoked: int = Field(examples=[2])
    by_os: dict[str, int] = Field(
        description='active nodes per operating system; "unknown" when none was given',
        examples=[{"macos": 6, "linux": 4}],
    )


class ConfigPeer(_Model):
    """One [Peer] section of a node's WireGuard configuration."""

    node_id: str = Field(examples=["node_p2x9c4v1"])
    name: str = Field(examples=["build-box"])
    public_key: str = Field(examples=[_EXAMPLE_KEY])
    allowed_ips: list[str] = Field(
        examples=[["100.64.0.9/32", "fd7a:115c:a1e0::9/128"]]
    )
    endpoint: str | None = Field(
        description="ip:port; null when the peer reported none",
        examples=["198.51.100.4:51820"],
    )
    persistent_keepalive: int = Field(description="seconds; 0 is off", examples=[25])


class NodeConfig(_Model):
    """A node's WireGuard configuration as the coordinator sees it."""

    node_id: str = Field(examples=["node_7h3k2m9x"])
    addresses: list[str] = Field(examples=[["100.64.0.7/16", "fd7a:115c:a1e0::7/64"]])
    listen_port: int = Field(examples=[51820])
    private_key: str = Field(
        description="a placeholder: the server never knows the node's private key",
        examples=["<private key of this device: only it holds the key>"],
    )
    peers: list[ConfigPeer]


class AuditEvent(_Model):
    """Something a user, API key, node or the system did in the org."""

    id: str = Field(examples=["aud_3k9m2x7q"])
    org_id: str = Field(examples=["org_q4r8t2"])
    actor_type: str = Field(
        description="user, apiKey, node or system", examples=["apiKey"]
    )
    actor_id: str = Field(examples=["key_8c1d5e"])
    action: str = Field(examples=["node.revoked"])
    target_type: str = Field(examples=["node"])
    target_id: str = Field(examples=["node_7h3k2m9x"])
    attributes: dict[str, JsonValue] = Field(examples=[{"name": "ada-laptop"}])
    created_at: UtcTime | None


class DeviceActivity(_Model):
    """One event in a node's life: connected, disconnected, endpoint changed…"""

    id: str = Field(examples=["act_5n2v8r1k"])
    resource_type: str = Field(examples=["runmesh_device"])
    resource_id: str = Field(examples=["node_7h3k2m9x"])
    event_type: str = Field(examples=["runmesh.node.connected"])
    severity: str = Field(description="info or warning", examples=["info"])
    status: str = Field(
        description="the node's status after the event", examples=["online"]
    )
    title: str = Field(examples=["ada-laptop connected"])
    summary: str = Field(examples=["ada-laptop connected from 203.0.113.7:51820"])
    attributes: dict[str, JsonValue] = Field(
        examples=[{"endpoint": "203.0.113.7:51820"}]
    )
    created_at: UtcTime | None


class Liveness(_Model):
    """The gateway process answers; says nothing of the coordinator."""

    status: Literal["ok"] = "ok"


class Readiness(_Model):
    """The gateway can serve: the coordinator passed its health check."""

    status: Literal["ready"] = "ready"

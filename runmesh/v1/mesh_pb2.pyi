import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from runmesh.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_STATUS_UNSPECIFIED: _ClassVar[LinkStatus]
    LINK_STATUS_PENDING: _ClassVar[LinkStatus]
    LINK_STATUS_APPROVED: _ClassVar[LinkStatus]
    LINK_STATUS_EXPIRED: _ClassVar[LinkStatus]
    LINK_STATUS_DENIED: _ClassVar[LinkStatus]
LINK_STATUS_UNSPECIFIED: LinkStatus
LINK_STATUS_PENDING: LinkStatus
LINK_STATUS_APPROVED: LinkStatus
LINK_STATUS_EXPIRED: LinkStatus
LINK_STATUS_DENIED: LinkStatus

class StartLinkRequest(_message.Message):
    __slots__ = ("public_key", "device_label", "os", "app_version", "hostname", "client_metadata")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LABEL_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_METADATA_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    device_label: str
    os: str
    app_version: str
    hostname: str
    client_metadata: _struct_pb2.Struct
    def __init__(self, public_key: _Optional[str] = ..., device_label: _Optional[str] = ..., os: _Optional[str] = ..., app_version: _Optional[str] = ..., hostname: _Optional[str] = ..., client_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class StartLinkResponse(_message.Message):
    __slots__ = ("code", "url", "expires_at", "interval_seconds")
    CODE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    code: str
    url: str
    expires_at: _timestamp_pb2.Timestamp
    interval_seconds: int
    def __init__(self, code: _Optional[str] = ..., url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_seconds: _Optional[int] = ...) -> None: ...

class PollLinkRequest(_message.Message):
    __slots__ = ("code", "public_key")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    code: str
    public_key: str
    def __init__(self, code: _Optional[str] = ..., public_key: _Optional[str] = ...) -> None: ...

class CoordinatorEndpoint(_message.Message):
    __slots__ = ("target", "public_key")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    target: str
    public_key: str
    def __init__(self, target: _Optional[str] = ..., public_key: _Optional[str] = ...) -> None: ...

class PollLinkResponse(_message.Message):
    __slots__ = ("status", "expires_at", "interval_seconds", "node", "coordinator")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    status: LinkStatus
    expires_at: _timestamp_pb2.Timestamp
    interval_seconds: int
    node: _node_pb2.Node
    coordinator: CoordinatorEndpoint
    def __init__(self, status: _Optional[_Union[LinkStatus, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_seconds: _Optional[int] = ..., node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., coordinator: _Optional[_Union[CoordinatorEndpoint, _Mapping]] = ...) -> None: ...

class NodeMessage(_message.Message):
    __slots__ = ("hello", "keepalive", "resync", "endpoints", "rotate_key")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ROTATE_KEY_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    keepalive: Keepalive
    resync: ResyncRequest
    endpoints: EndpointUpdate
    rotate_key: RotateKey
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., keepalive: _Optional[_Union[Keepalive, _Mapping]] = ..., resync: _Optional[_Union[ResyncRequest, _Mapping]] = ..., endpoints: _Optional[_Union[EndpointUpdate, _Mapping]] = ..., rotate_key: _Optional[_Union[RotateKey, _Mapping]] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("challenge", "full_map", "delta", "keepalive", "revoked", "reconnect", "key_rotated")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    FULL_MAP_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    KEY_ROTATED_FIELD_NUMBER: _ClassVar[int]
    challenge: Challenge
    full_map: _node_pb2.PeerMap
    delta: _node_pb2.PeerDelta
    keepalive: Keepalive
    revoked: Revoked
    reconnect: Reconnect
    key_rotated: KeyRotated
    def __init__(self, challenge: _Optional[_Union[Challenge, _Mapping]] = ..., full_map: _Optional[_Union[_node_pb2.PeerMap, _Mapping]] = ..., delta: _Optional[_Union[_node_pb2.PeerDelta, _Mapping]] = ..., keepalive: _Optional[_Union[Keepalive, _Mapping]] = ..., revoked: _Optional[_Union[Revoked, _Mapping]] = ..., reconnect: _Optional[_Union[Reconnect, _Mapping]] = ..., key_rotated: _Optional[_Union[KeyRotated, _Mapping]] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce", "coordinator_public_key")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    coordinator_public_key: str
    def __init__(self, nonce: _Optional[bytes] = ..., coordinator_public_key: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("public_key", "challenge_answer", "last_version", "endpoints", "listen_port", "meshd_version")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_ANSWER_FIELD_NUMBER: _ClassVar[int]
    LAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_FIELD_NUMBER: _ClassVar[int]
    MESHD_VERSION_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    challenge_answer: bytes
    last_version: int
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    listen_port: int
    meshd_version: str
    def __init__(self, public_key: _Optional[str] = ..., challenge_answer: _Optional[bytes] = ..., last_version: _Optional[int] = ..., endpoints: _Optional[_Iterable[str]] = ..., listen_port: _Optional[int] = ..., meshd_version: _Optional[str] = ...) -> None: ...

class Keepalive(_message.Message):
    __slots__ = ("sent_at",)
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResyncRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Revoked(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Reconnect(_message.Message):
    __slots__ = ("reason", "retry_within_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_WITHIN_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    retry_within_ms: int
    def __init__(self, reason: _Optional[str] = ..., retry_within_ms: _Optional[int] = ...) -> None: ...

class EndpointUpdate(_message.Message):
    __slots__ = ("endpoints", "listen_port")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    listen_port: int
    def __init__(self, endpoints: _Optional[_Iterable[str]] = ..., listen_port: _Optional[int] = ...) -> None: ...

class RotateKey(_message.Message):
    __slots__ = ("new_public_key", "new_key_answer")
    NEW_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_ANSWER_FIELD_NUMBER: _ClassVar[int]
    new_public_key: str
    new_key_answer: bytes
    def __init__(self, new_public_key: _Optional[str] = ..., new_key_answer: _Optional[bytes] = ...) -> None: ...

class KeyRotated(_message.Message):
    __slots__ = ("new_public_key", "version")
    NEW_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    new_public_key: str
    version: int
    def __init__(self, new_public_key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATUS_UNSPECIFIED: _ClassVar[NodeStatus]
    NODE_STATUS_ONLINE: _ClassVar[NodeStatus]
    NODE_STATUS_OFFLINE: _ClassVar[NodeStatus]
    NODE_STATUS_REVOKED: _ClassVar[NodeStatus]
NODE_STATUS_UNSPECIFIED: NodeStatus
NODE_STATUS_ONLINE: NodeStatus
NODE_STATUS_OFFLINE: NodeStatus
NODE_STATUS_REVOKED: NodeStatus

class Node(_message.Message):
    __slots__ = ("id", "org_id", "name", "device_label", "hostname", "os", "app_version", "public_key", "ipv4", "ipv6", "status", "owner_user_id", "endpoints", "created_at", "last_seen_at", "revoked_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LABEL_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    org_id: str
    name: str
    device_label: str
    hostname: str
    os: str
    app_version: str
    public_key: str
    ipv4: str
    ipv6: str
    status: NodeStatus
    owner_user_id: str
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    last_seen_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., org_id: _Optional[str] = ..., name: _Optional[str] = ..., device_label: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., app_version: _Optional[str] = ..., public_key: _Optional[str] = ..., ipv4: _Optional[str] = ..., ipv6: _Optional[str] = ..., status: _Optional[_Union[NodeStatus, str]] = ..., owner_user_id: _Optional[str] = ..., endpoints: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("node_id", "name", "public_key", "allowed_ips", "endpoints", "persistent_keepalive", "online")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IPS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    public_key: str
    allowed_ips: _containers.RepeatedScalarFieldContainer[str]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    persistent_keepalive: int
    online: bool
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., public_key: _Optional[str] = ..., allowed_ips: _Optional[_Iterable[str]] = ..., endpoints: _Optional[_Iterable[str]] = ..., persistent_keepalive: _Optional[int] = ..., online: _Optional[bool] = ...) -> None: ...

class SelfConfig(_message.Message):
    __slots__ = ("node_id", "name", "public_key", "addresses")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    public_key: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., public_key: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class PeerMap(_message.Message):
    __slots__ = ("version", "self", "peers")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SELF_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    version: int
    self: SelfConfig
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self_, version: _Optional[int] = ..., self: _Optional[_Union[SelfConfig, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class PeerDelta(_message.Message):
    __slots__ = ("from_version", "version", "upserted", "removed")
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    from_version: int
    version: int
    upserted: _containers.RepeatedCompositeFieldContainer[Peer]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, from_version: _Optional[int] = ..., version: _Optional[int] = ..., upserted: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

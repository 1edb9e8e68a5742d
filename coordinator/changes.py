"""A change to an org's peer map, as the change log records it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from runmesh.v1 import node_pb2


class ChangeOp(enum.StrEnum):
    # The peer is new or changed; the row carries it in full.
    UPSERT = "upsert"
    # The peer left the map (revoked); the row carries only its key.
    REMOVE = "remove"
    # The peer changed its key: the row's public_key is the old key and its
    # peer carries the new one. Peers drop the old key and add the new.
    REKEY = "rekey"


@dataclass(frozen=True)
class Change:
    version: int
    op: ChangeOp
    node_id: str
    public_key: str
    peer: node_pb2.Peer | None

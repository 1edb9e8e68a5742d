"""The node's copy of its peer map, and the rules for changing it.

A map is replaced whole by a full map and changed by deltas, each carrying
the version it brings the node to. A delta applies only on top of the
version it was made from; anything else (a gap, a repeat, a version that
goes backwards) is refused, and the caller asks for a full map. The node
never applies out of order and never drops an update silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from meshd.state import SavedMap
from meshd.wireguard.device import PeerConfig
from runmesh.v1 import node_pb2
from runmesh.wgkey import decode_key


class VersionGap(Exception):
    """A delta that does not follow the version the node holds."""


@dataclass
class PeerMapCopy:
    public_key: str
    version: int = 0
    name: str = ""
    addresses: list[str] = field(default_factory=list)
    peers: dict[str, node_pb2.Peer] = field(default_factory=dict)
    # The node's own id: after a key rotation the node appears in a delta
    # under its new key, and must still be recognised as itself.
    node_id: str = ""

    def is_self(self, peer: node_pb2.Peer) -> bool:
        if peer.public_key == self.public_key:
            return True
        return bool(self.node_id) and peer.node_id == self.node_id

    def rekey(self, public_key: str) -> None:
        """The node's key changed: the new key is never one of its peers."""
        self.public_key = public_key
        self.peers = {k: p for k, p in self.peers.items() if not self.is_self(p)}

    def replace(self, full: node_pb2.PeerMap) -> None:
        self.version = full.version
        self.name = full.self.name
        self.addresses = list(full.self.addresses)
        self.peers = {p.public_key: p for p in full.peers if not self.is_self(p)}

    def apply(self, delta: node_pb2.PeerDelta) -> None:
        if _confirms(delta, self.version):
            return  # a resume with nothing missed
        if delta.from_version != self.version or delta.version <= self.version:
            raise VersionGap(
                f"delta {delta.from_version}->{delta.version} does not follow "
                f"version {self.version}"
            )
        for key in delta.removed:
            self.peers.pop(key, None)
        for peer in delta.upserted:
            if self.is_self(peer):
                self.name = peer.name  # a change to this node itself
            else:
                self.peers[peer.public_key] = peer
        self.version = delta.version

    def wireguard_peers(self) -> dict[str, PeerConfig]:
        return {key: peer_config(peer) for key, peer in self.peers.items()}

    def saved(self) -> SavedMap:
        return SavedMap(
            version=self.version,
            addresses=list(self.addresses),
            name=self.name,
            peers={k: MessageToDict(p) for k, p in self.peers.items()},
        )

    @classmethod
    def restore(
        cls, public_key: str, saved: SavedMap, node_id: str = ""
    ) -> PeerMapCopy:
        """The copy `saved()` wrote; ValueError if `saved` does not hold one.

        Every peer is checked as the device would take it, so a file edited
        by hand fails here rather than in the first apply to the device.
        """
        try:
            peers = {k: ParseDict(v, node_pb2.Peer()) for k, v in saved.peers.items()}
        except ParseError as exc:
            raise ValueError(f"a saved peer does not parse: {exc}") from None
        for peer in peers.values():
            decode_key(peer_config(peer).public_key)
        copy = cls(
            public_key, saved.version, saved.name, list(saved.addresses), peers, node_id
        )
        copy.rekey(public_key)
        return copy


def _confirms(delta: node_pb2.PeerDelta, version: int) -> bool:
    """An empty delta from and to the version held: "you are up to date"."""
    return (
        delta.from_version == version
        and delta.version == version
        and not delta.upserted
        and not delta.removed
    )


def peer_config(peer: node_pb2.Peer) -> PeerConfig:
    return PeerConfig(
        public_key=peer.public_key,
        allowed_ips=tuple(peer.allowed_ips),
        endpoint=peer.endpoints[0] if peer.endpoints else None,
        persistent_keepalive=peer.persistent_keepalive,
    )

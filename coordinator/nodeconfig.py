"""A node's WireGuard configuration as the coordinator sees it.

The same data is offered as JSON and as a wg-quick file an operator can use
directly. The private key exists only on the device; the file carries a
placeholder where it goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from coordinator import peermap
from coordinator.models import Node, Org

PRIVATE_KEY_PLACEHOLDER = "<private key of this device: only it holds the key>"
DEFAULT_LISTEN_PORT = 51820


@dataclass(frozen=True)
class ConfigPeer:
    node_id: str
    name: str
    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str
    persistent_keepalive: int


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    name: str
    addresses: tuple[str, ...]
    listen_port: int
    peers: tuple[ConfigPeer, ...]

    def wg_quick(self) -> str:
        lines = [
            f"# RunMesh node {self.name} ({self.node_id})",
            "[Interface]",
            f"PrivateKey = {PRIVATE_KEY_PLACEHOLDER}",
            f"Address = {', '.join(self.addresses)}",
            f"ListenPort = {self.listen_port}",
        ]
        for peer in self.peers:
            lines += [
                "",
                f"# {peer.name} ({peer.node_id})",
                "[Peer]",
                f"PublicKey = {peer.public_key}",
                f"AllowedIPs = {', '.join(peer.allowed_ips)}",
            ]
            if peer.endpoint:
                lines.append(f"Endpoint = {peer.endpoint}")
            if peer.persistent_keepalive:
                lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
        return "\n".join(lines) + "\n"


def config_of(session: Session, org: Org, node: Node) -> NodeConfig:
    peers = []
    if node.revoked_at is None:
        for other in peermap.active_nodes(session, org.id):
            if other.id == node.id:
                continue
            peer = peermap.peer_of(other)
            peers.append(
                ConfigPeer(
                    node_id=peer.node_id,
                    name=peer.name,
                    public_key=peer.public_key,
                    allowed_ips=tuple(peer.allowed_ips),
                    endpoint=peer.endpoints[0] if peer.endpoints else "",
                    persistent_keepalive=peer.persistent_keepalive,
                )
            )
    return NodeConfig(
        node_id=node.id,
        name=node.name,
        addresses=tuple(peermap.self_of(node, org).addresses),
        listen_port=node.listen_port or DEFAULT_LISTEN_PORT,
        peers=tuple(peers),
    )

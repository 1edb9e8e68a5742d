"""What a WireGuard device holds, and the four changes we ever make to one.

Values are normalised when they are built (CIDRs in network form and sorted,
IPv6 compressed, endpoints re-spelled), so two values that mean the same
device compare equal and the reconciler never plans a change for a spelling.

Keys stay the base64 text they came as: they are checked once, where they
become UAPI hex, so that a bad key is reported with the field it came in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from runmesh.wgkey import decode_key, encode_key

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_cidr(text: str) -> str:
    """`text` in network form: host bits cleared, IPv6 compressed.

    Host bits are cleared rather than refused because WireGuard routes by
    prefix: `100.64.0.7/16` and `100.64.0.0/16` route the same packets.
    """
    return str(ipaddress.ip_network(text.strip(), strict=False))


def normalise_allowed_ips(cidrs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Allowed IPs as a set in a stable order, so order never reads as change."""
    networks = {ipaddress.ip_network(c.strip(), strict=False) for c in cidrs}
    ordered = sorted(networks, key=network_sort_key)
    return tuple(str(n) for n in ordered)


def network_sort_key(network: IPNetwork) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)


def normalise_endpoint(text: str) -> str:
    """`ip:port` for IPv4, `[ip6]:port` for IPv6; names are refused.

    WireGuard endpoints are addresses: a hostname would have to be resolved
    by someone, and wireguard-go refuses them over UAPI.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"endpoint {text!r} is not ip:port or [ip6]:port")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise ValueError(f"endpoint {text!r} is not ip:port or [ip6]:port") from None
    if not 0 < port < 65536:
        raise ValueError(f"endpoint {text!r} has port out of range")
    if address.version == 6:
        return f"[{address.compressed}]:{port}"
    if bracketed:
        raise ValueError(f"endpoint {text!r} brackets an IPv4 address")
    return f"{address}:{port}"


def clamp_private_key(key: str) -> str:
    """The private key as a device reports it after accepting it.

    wireguard-go clamps a private key the way X25519 does (three low bits
    and the top bit cleared, bit 254 set) and reports the clamped bytes, so
    a desired key generated without clamping (PyNaCl's are not) must be
    clamped before it is compared, or every restart would re-set the key.
    The public key is the same either way.
    """
    raw = bytearray(decode_key(key))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return encode_key(bytes(raw))


@dataclass(frozen=True)
class PeerConfig:
    """The configuration of one peer that we set and compare."""

    public_key: str  # standard base64, as `wg show` prints it
    allowed_ips: tuple[str, ...]  # normalised CIDRs, sorted
    endpoint: str | None = None  # "ip:port" or "[ip6]:port"
    persistent_keepalive: int = 0  # seconds, 0 = off

    def __post_init__(self) -> None:
        # Frozen: normalising means writing through object.__setattr__.
        object.__setattr__(self, "allowed_ips", normalise_allowed_ips(self.allowed_ips))
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", normalise_endpoint(self.endpoint))
        if not 0 <= self.persistent_keepalive < 65536:
            raise ValueError(
                f"persistent_keepalive {self.persistent_keepalive} is not 0..65535"
            )


@dataclass(frozen=True)
class PeerState:
    """A peer as the device reports it: its configuration and its counters."""

    config: PeerConfig
    latest_handshake: int = 0  # unix seconds, 0 = never
    rx_bytes: int = 0
    tx_bytes: int = 0

    @property
    def public_key(self) -> str:
        return self.config.public_key


@dataclass(frozen=True)
class DeviceState:
    """Everything a device reports that we care about."""

    private_key: str | None  # None until one is set
    listen_port: int
    peers: dict[str, PeerState] = field(default_factory=dict)  # by public key


@dataclass(frozen=True)
class SetInterface:
    """Change the interface's own settings; None leaves a setting as it is."""

    private_key: str | None = None
    listen_port: int | None = None


@dataclass(frozen=True)
class AddPeer:
    """Create a peer with exactly this configuration."""

    config: PeerConfig


@dataclass(frozen=True)
class UpdatePeer:
    """Change some settings of an existing peer; None leaves a setting alone.

    The fields are separate because they change for different reasons: a
    roaming peer's endpoint changes often, its allowed IPs hardly ever, and
    replacing allowed IPs to move an endpoint would briefly drop its routes.
    """

    public_key: str
    allowed_ips: tuple[str, ...] | None = None
    endpoint: str | None = None
    persistent_keepalive: int | None = None

    def __post_init__(self) -> None:
        if self.allowed_ips is not None:
            object.__setattr__(
                self, "allowed_ips", normalise_allowed_ips(self.allowed_ips)
            )
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", normalise_endpoint(self.endpoint))


@dataclass(frozen=True)
class RemovePeer:
    public_key: str


Operation = SetInterface | AddPeer | UpdatePeer | RemovePeer

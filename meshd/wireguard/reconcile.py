"""The smallest set of changes that turns the device we have into the one we want.

`plan` is pure: it compares two values and returns operations, so the apply
loop can read the device, plan, apply and read again without this module
knowing how a device is reached. Applying the plan to an unchanged device
plans nothing, which is what makes a meshd restart invisible to traffic.

Endpoints roam. WireGuard moves a peer's endpoint by itself when an
authenticated packet arrives from a new address, so the endpoint a device
reports is often newer than the one in the map. Given the `previous`
desired device (the one the last plan was made for), an existing peer's
endpoint is set only when the coordinator moved it (the desired endpoint
differs from the previous desired one) or when the device has none at all;
a peer that merely roamed is left where WireGuard put it instead of being
pulled back on every reconcile tick. Allowed IPs and keepalive have no such
life of their own on the device and are always repaired. Without
`previous` every difference is repaired, endpoints included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from runmesh.wgkey import InvalidKey

from .device import (
    AddPeer,
    DeviceState,
    IPNetwork,
    Operation,
    PeerConfig,
    RemovePeer,
    SetInterface,
    UpdatePeer,
    clamp_private_key,
    network_sort_key,
)


class OverlappingAllowedIPs(ValueError):
    """Two peers claim overlapping prefixes.

    WireGuard routes a prefix to exactly one peer; given the same prefix
    twice, wireguard-go silently moves it to whichever peer came last, so an
    overlap in a map is refused before it reaches the device.
    """


@dataclass(frozen=True)
class DesiredDevice:
    private_key: str
    listen_port: int  # 0 = any port; whatever the device picked is kept
    peers: dict[str, PeerConfig] = field(default_factory=dict)  # by public key


def plan(
    desired: DesiredDevice,
    actual: DeviceState,
    previous: DesiredDevice | None = None,
) -> list[Operation]:
    """Operations turning `actual` into `desired`, removals first.

    Removals go first so that a prefix moving from a removed peer to a new
    one is free before it is claimed. An endpoint the map leaves unset is
    not cleared: UAPI cannot clear one, and the endpoint the device learned
    from the peer's own packets is the best one it has. `previous` is the
    desired device of the last plan; with it, endpoints follow the roaming
    policy in the module docstring.
    """
    check_no_overlap(desired.peers)
    interface = _interface_change(desired, actual)
    removals: list[Operation] = [
        RemovePeer(key) for key in sorted(actual.peers.keys() - desired.peers.keys())
    ]
    changes: list[Operation] = []
    for key in sorted(desired.peers):
        wanted = desired.peers[key]
        current = actual.peers.get(key)
        if current is None:
            changes.append(AddPeer(wanted))
            continue
        update = _peer_change(wanted, current.config, _moved(key, desired, previous))
        if update is not None:
            changes.append(update)

    return ([interface] if interface else []) + removals + changes


def _interface_change(
    desired: DesiredDevice, actual: DeviceState
) -> SetInterface | None:
    key: str | None = desired.private_key
    if _same_private_key(desired.private_key, actual.private_key):
        key = None
    port: int | None = desired.listen_port
    if port in (0, actual.listen_port):
        port = None

    if key is None and port is None:
        return None
    return SetInterface(private_key=key, listen_port=port)


def _same_private_key(desired: str, actual: str | None) -> bool:
    if actual is None:
        return False
    try:
        return clamp_private_key(desired) == clamp_private_key(actual)
    except InvalidKey:
        # Planned as a change so the error surfaces where keys are encoded,
        # naming the field, instead of being hidden inside a comparison.
        return False


def _moved(key: str, desired: DesiredDevice, previous: DesiredDevice | None) -> bool:
    """Whether the coordinator changed peer `key`'s endpoint since the last plan.

    Without a previous plan there is nothing to tell a roam from a move, so
    every difference counts as a move.
    """
    if previous is None:
        return True
    before = previous.peers.get(key)
    return before is None or before.endpoint != desired.peers[key].endpoint


def _peer_change(
    wanted: PeerConfig, current: PeerConfig, moved: bool
) -> UpdatePeer | None:
    allowed_ips = (
        wanted.allowed_ips if wanted.allowed_ips != current.allowed_ips else None
    )
    endpoint = (
        wanted.endpoint
        if wanted.endpoint is not None
        and wanted.endpoint != current.endpoint
        and (moved or current.endpoint is None)
        else None
    )
    keepalive = (
        wanted.persistent_keepalive
        if wanted.persistent_keepalive != current.persistent_keepalive
        else None
    )
    if allowed_ips is None and endpoint is None and keepalive is None:
        return None
    return UpdatePeer(
        public_key=wanted.public_key,
        allowed_ips=allowed_ips,
        endpoint=endpoint,
        persistent_keepalive=keepalive,
    )


def check_no_overlap(peers: Mapping[str, PeerConfig]) -> None:
    """Raise OverlappingAllowedIPs if two different peers' prefixes overlap.

    Sorted by start address, two CIDRs either nest or are disjoint, so one
    pass that remembers the widest prefix still open finds every clash in
    O(n log n); a mesh of thousands of peers is checked on every map.
    One peer holding nested prefixes of its own is allowed.
    """
    claims: list[tuple[IPNetwork, str]] = [
        (ipaddress.ip_network(cidr), key)
        for key, config in peers.items()
        for cidr in config.allowed_ips
    ]
    claims.sort(key=lambda claim: network_sort_key(claim[0]))

    open_claim: tuple[IPNetwork, str] | None = None
    for network, key in claims:
        if open_claim is not None and _contains(open_claim[0], network):
            if open_claim[1] != key:
                raise OverlappingAllowedIPs(
                    f"peer {open_claim[1]} allowed IP {open_claim[0]} overlaps "
                    f"peer {key} allowed IP {network}"
                )
            continue
        open_claim = (network, key)


def _contains(outer: IPNetwork, inner: IPNetwork) -> bool:
    if outer.version != inner.version:
        return False
    first, last = int(inner.network_address), int(inner.broadcast_address)
    return int(outer.network_address) <= first and last <= int(outer.broadcast_address)

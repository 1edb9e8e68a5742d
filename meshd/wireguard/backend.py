"""The one interface meshd's loops use to drive a WireGuard device.

A kernel backend (netlink) and the userspace one (wireguard-go over UAPI)
both fit it; the loops never learn which one they have.

Lifetime: `close()` stops managing the device but leaves it, with its keys,
peers and addresses, in place. For the userspace backend that means the
wireguard-go process keeps running detached, so a meshd restart or upgrade
does not drop traffic; the next `start()` for the same interface finds the
socket answering and attaches to that process instead of starting another.
Only `remove()` takes the device down.
"""

from __future__ import annotations

from typing import Protocol

from .device import DeviceState, Operation


class WireGuardError(Exception):
    """The data plane could not be reached or refused a change.

    Transient by nature (a process died, a socket vanished): the apply loop
    backs off, reads the device again and replans. Input errors are
    ValueErrors instead (InvalidKey, OverlappingAllowedIPs) and retrying
    them is pointless.
    """


class WireGuardBackend(Protocol):
    async def start(self, interface: str, addresses: list[str], mtu: int) -> None:
        """Create or attach to `interface`, set its addresses and MTU, bring it up.

        Addresses are CIDRs such as `100.64.0.7/16`; ones not listed are
        removed from the interface, so an address the coordinator moved
        away does not linger.
        """
        ...

    async def read(self) -> DeviceState: ...

    async def apply(self, ops: list[Operation]) -> None:
        """Apply `ops` in order. After a failure, read again before replanning:
        a device may have taken the operations before the failing one."""
        ...

    async def remove(self) -> None:
        """Take the device down for good: delete the interface, stop its process."""
        ...

    async def close(self) -> None:
        """Stop managing the device and leave it running as it is."""
        ...

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


class NamedDevice:
    """The interface name both backends manage, set by start() or adopt()."""

    _interface: str | None = None

    @property
    def interface(self) -> str:
        if self._interface is None:
            raise WireGuardError("the backend has not been started")
        return self._interface

    def adopt(self, interface: str) -> None:
        """Name the device to manage without creating or changing it
        (for `meshd down`, which only removes what is there)."""
        check_interface_name(interface)
        self._interface = interface


IFNAMSIZ = 16  # including the terminating NUL


class InvalidInterfaceName(ValueError):
    """A name Linux would refuse for a link, or unsafe as a socket path."""


def check_interface_name(name: str) -> None:
    """InvalidInterfaceName unless Linux would accept `name` for a link.

    The name also becomes a path (/var/run/wireguard/NAME.sock), which is
    why '/', '.' and '..' matter beyond the kernel's own rules.
    """
    if not 0 < len(name) < IFNAMSIZ:
        raise InvalidInterfaceName(
            f"interface name {name!r} must be 1 to {IFNAMSIZ - 1} characters"
        )
    if name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise InvalidInterfaceName(
            f"interface name {name!r} may not be '.' or '..' nor contain "
            "'/', ':' or whitespace"
        )

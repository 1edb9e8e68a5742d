"""The Linux side of a WireGuard interface: addresses, MTU, link state.

pyroute2's IPRoute is synchronous; every call runs in a worker thread so a
slow netlink answer never stalls meshd's event loop. A socket is opened per
call: these calls are rare (start-up, an address change), and a fresh
socket cannot carry stale state across a network namespace that was
recreated.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .backend import WireGuardError

T = TypeVar("T")

# From <linux/if.h> and <linux/if_addr.h>.
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0


class LinkError(WireGuardError):
    """A netlink request about an interface failed."""


class NetworkInterface:
    """One interface by name, optionally in a named network namespace.

    The namespace is for tests and for hosts that keep the mesh in one;
    meshd in production passes None and works in its own namespace.
    """

    def __init__(self, name: str, netns: str | None = None) -> None:
        self.name = name
        self.netns = netns

    async def exists(self) -> bool:
        return await self._run(lambda ipr: self._index(ipr) is not None)

    async def wait(self, timeout: float = 5.0) -> None:
        """Return once the interface exists; LinkError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not await self.exists():
            if time.monotonic() > deadline:
                raise LinkError(f"interface {self.name} did not appear in {timeout}s")
            await asyncio.sleep(0.05)

    async def addresses(self) -> list[str]:
        """The interface's addresses as CIDRs, link-local ones left out."""
        return await self._run(lambda ipr: sorted(self._addresses(ipr)))

    async def set_addresses(self, wanted: Sequence[str]) -> None:
        """Make `wanted` (e.g. `100.64.0.7/16`) exactly the interface's addresses.

        Only this interface is touched, and link-local IPv6 addresses the
        kernel adds itself are kept.
        """
        normalised = {str(ipaddress.ip_interface(cidr)) for cidr in wanted}
        await self._run(lambda ipr: self._set_addresses(ipr, normalised))

    async def add_address(self, cidr: str) -> None:
        """Add `cidr`; one that is already there is not an error."""
        await self._run(lambda ipr: self._change_address(ipr, "add", cidr))

    async def remove_address(self, cidr: str) -> None:
        """Remove `cidr`; one that is already gone is not an error."""
        await self._run(lambda ipr: self._change_address(ipr, "del", cidr))

    async def set_mtu(self, mtu: int) -> None:
        await self._run(lambda ipr: self._set_link(ipr, mtu=mtu))

    async def up(self) -> None:
        await self._run(lambda ipr: self._set_link(ipr, state="up"))

    async def is_up(self) -> bool:
        def flags(ipr: IPRoute) -> int:
            link = ipr.get_links(self._require_index(ipr))[0]
            return cast(int, link["flags"])

        return bool(await self._run(flags) & IFF_UP)

    async def mtu(self) -> int:
        def mtu(ipr: IPRoute) -> int:
            link = ipr.get_links(self._require_index(ipr))[0]
            return cast(int, link.get("IFLA_MTU"))

        return await self._run(mtu)

    async def delete(self) -> None:
        """Delete the link; one that does not exist is not an error."""
        await self._run(self._delete)

    async def _run(self, call: Callable[[IPRoute], T]) -> T:
        return await asyncio.to_thread(self._call, call)

    def _call(self, call: Callable[[IPRoute], T]) -> T:
        try:
            with IPRoute(netns=self.netns) as ipr:
                return call(ipr)
        except NetlinkError as exc:
            raise LinkError(f"netlink request on {self.name} failed: {exc}") from exc

    def _index(self, ipr: IPRoute) -> int | None:
        found = ipr.link_lookup(ifname=self.name)
        return cast(int, found[0]) if found else None

    def _require_index(self, ipr: IPRoute) -> int:
        index = self._index(ipr)
        if index is None:
            raise LinkError(f"interface {self.name} does not exist")
        return index

    def _addresses(self, ipr: IPRoute) -> set[str]:
        found = set()
        for msg in ipr.get_addr(index=self._require_index(ipr)):
            cidr = ipaddress.ip_interface(f"{_local_address(msg)}/{msg['prefixlen']}")
            if not cidr.ip.is_link_local:
                found.add(str(cidr))
        return found

    def _set_addresses(self, ipr: IPRoute, wanted: set[str]) -> None:
        present = self._addresses(ipr)
        for cidr in sorted(present - wanted):
            self._change_address(ipr, "del", cidr)
        for cidr in sorted(wanted - present):
            self._change_address(ipr, "add", cidr)

    def _change_address(self, ipr: IPRoute, command: str, cidr: str) -> None:
        address = ipaddress.ip_interface(cidr)
        try:
            ipr.addr(
                command,
                index=self._require_index(ipr),
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
            )
        except NetlinkError as exc:
            harmless = errno.EEXIST if command == "add" else errno.EADDRNOTAVAIL
            if exc.code != harmless:
                raise LinkError(
                    f"could not {command} address {cidr} on {self.name}: {exc}"
                ) from exc

    def _set_link(self, ipr: IPRoute, **settings: object) -> None:
        ipr.link("set", index=self._require_index(ipr), **settings)

    def _delete(self, ipr: IPRoute) -> None:
        index = self._index(ipr)
        if index is None:
            return
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


async def underlay_addresses(
    exclude: Sequence[str] = (), netns: str | None = None
) -> list[str]:
    """Global addresses this host can be reached on, for endpoint reporting.

    Only interfaces that are up and running count; loopback, the interfaces
    named in `exclude` (the WireGuard one: its addresses are inside the
    mesh) and addresses still in or failed at duplicate detection are left
    out. IPv4 first, then IPv6, each sorted.
    """
    return await asyncio.to_thread(_underlay_addresses, set(exclude), netns)


def _underlay_addresses(exclude: set[str], netns: str | None) -> list[str]:
    with IPRoute(netns=netns) as ipr:
        usable = {
            cast(int, link["index"])
            for link in ipr.get_links()
            if link.get("IFLA_IFNAME") not in exclude
            and link["flags"] & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING
            and not link["flags"] & IFF_LOOPBACK
        }
        found = set()
        for msg in ipr.get_addr():
            flags = msg.get("IFA_FLAGS") or msg["flags"]
            if (
                msg["index"] in usable
                and msg["scope"] == RT_SCOPE_UNIVERSE
                and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
            ):
                found.add(ipaddress.ip_address(_local_address(msg)))
    ordered = sorted(found, key=lambda a: (a.version, int(a)))
    return [str(a) for a in ordered]


def _local_address(msg: Any) -> str:
    # On a point-to-point link IFA_ADDRESS may be the far end; IFA_LOCAL,
    # when present, is always ours. Attributes are read with get(): a
    # pyroute2 message's [] reaches only header fields.
    return cast(str, msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS"))

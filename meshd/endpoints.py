"""The node's underlay endpoints, and a watch that says when they change.

Peers reach a node at the addresses it reports; when DHCP moves it or an
interface comes up, they must hear of the new address from the
coordinator, because wireguard-go keeps sending from the old source address
and peers do not learn the new one from its packets.

The watch listens to the kernel's address and link notifications
(rtnetlink groups, through pyroute2's asyncio socket) so a change is seen
at once, and looks at the addresses once a second anyway: a notification
that never came (a full socket buffer, a socket that stopped delivering)
costs at most a second. A burst of changes (an address removed and
another added) is reported once, after a short quiet spell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from meshd.wireguard.netconf import underlay_addresses

log = logging.getLogger(__name__)

DEBOUNCE = 0.3  # seconds of quiet before a burst of changes is reported
POLL_INTERVAL = 1.0  # a look at the addresses, notification or not


def format_endpoints(addresses: Sequence[str], port: int) -> list[str]:
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


async def current_endpoints(exclude: Sequence[str], port: int) -> list[str]:
    return format_endpoints(await underlay_addresses(exclude=exclude), port)


async def watch_endpoints(
    exclude: Sequence[str], port: int, known: list[str]
) -> AsyncIterator[list[str]]:
    """Yield the endpoints each time they differ from the last ones seen."""
    changed = asyncio.Event()
    listener = asyncio.create_task(_listen(changed))
    try:
        while True:
            try:
                await asyncio.wait_for(changed.wait(), POLL_INTERVAL)
            except TimeoutError:
                pass
            if changed.is_set():
                await _quiet(changed)
            try:
                endpoints = await current_endpoints(exclude, port)
            except Exception as exc:
                # A dump that raced a change (or a netlink hiccup): look
                # again shortly rather than miss the change.
                log.warning("could not read the underlay addresses: %s", exc)
                changed.set()
                await asyncio.sleep(POLL_INTERVAL)
                continue
            if endpoints != known:
                known = endpoints
                yield endpoints
    finally:
        listener.cancel()


async def _quiet(changed: asyncio.Event) -> None:
    """Wait until no change came for DEBOUNCE seconds."""
    while True:
        changed.clear()
        await asyncio.sleep(DEBOUNCE)
        if not changed.is_set():
            return


async def _listen(changed: asyncio.Event) -> None:
    """Set `changed` on every address or link notification; returns (and
    the caller polls) if notifications cannot be had.

    TODO: rtnetlink is Linux only. On macOS this falls back to polling, and
    the polling itself reads addresses through pyroute2's netlink calls
    (`underlay_addresses`), which macOS lacks, so endpoint changes are not
    seen there; a PF_ROUTE socket would serve both (docs/macos.md).
    """
    try:
        # Imported here: a platform without rtnetlink still gets the poll.
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV6_IFADDR,
            RTMGRP_LINK,
        )

        groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_LINK
        async with AsyncIPRoute() as ipr:
            await ipr.bind(groups=groups)
            while True:
                async for _message in ipr.get():
                    changed.set()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure of the socket: fall back to polling
        log.warning(
            "cannot watch addresses (%s); polling every %gs", exc, POLL_INTERVAL
        )

"""Keeps the WireGuard device equal to the node's peer map.

Desired state (the map) and actual state (read back from the device) go in;
the smallest list of operations comes out (``wireguard.reconcile.plan``).
It runs after every map or delta and on a timer, so a peer removed or
changed by hand is put back and one added by hand is removed. A device that
already matches gets zero operations: restarting meshd changes nothing.

`persistent_keepalive`, when given, replaces the interval the coordinator
sends for every peer (0 turns it off on the device too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from nacl.public import PrivateKey

from meshd.peermap import PeerMapCopy
from meshd.wireguard.backend import WireGuardBackend, WireGuardError
from meshd.wireguard.device import Operation, PeerConfig, UpdatePeer
from meshd.wireguard.reconcile import (
    DesiredDevice,
    OverlappingAllowedIPs,
    check_no_overlap,
    plan,
)
from meshd.wireguard.userspace import UserspaceBackend
from runmesh.wgkey import encode_key

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        backend: WireGuardBackend,
        interface: str,
        private_key: PrivateKey,
        listen_port: int,
        mtu: int,
        persistent_keepalive: int | None = None,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        self._backend = backend
        self._interface = interface
        self._private_key = encode_key(bytes(private_key))
        self._listen_port = listen_port
        self._mtu = mtu
        self._persistent_keepalive = persistent_keepalive
        self._on_applied = on_applied
        self._addresses: list[str] | None = None
        # The desired device of the last plan: with it, `plan` tells an
        # endpoint the coordinator moved from one the peer roamed to.
        self._previous: DesiredDevice | None = None
        self._lock = asyncio.Lock()
        # Operations applied so far, for `meshd status` and tests.
        self.operations_applied = 0

    def set_private_key(self, private_key: PrivateKey) -> None:
        """Use `private_key` from the next converge on (a rotated key)."""
        self._private_key = encode_key(bytes(private_key))

    @property
    def started(self) -> bool:
        return self._addresses is not None

    async def converge(self, peer_map: PeerMapCopy) -> int:
        """Make the device match ``peer_map``; returns operations applied."""
        async with self._lock:
            try:
                return await self._converge(peer_map)
            except WireGuardError as exc:
                log.warning("WireGuard device unreachable (%s); restarting it", exc)
                await self._restart()
                return await self._converge(peer_map)

    async def _converge(self, peer_map: PeerMapCopy) -> int:
        if self._addresses != peer_map.addresses:
            await self._backend.start(self._interface, peer_map.addresses, self._mtu)
            self._addresses = list(peer_map.addresses)
        desired = DesiredDevice(
            private_key=self._private_key,
            listen_port=self._listen_port,
            peers=self._desired_peers(peer_map),
        )
        try:
            check_no_overlap(desired.peers)
        except OverlappingAllowedIPs as exc:
            # Applying it would silently move a prefix between peers; the
            # device keeps its last good configuration instead.
            log.error("refusing map version %d: %s", peer_map.version, exc)
            return 0
        operations = plan(desired, await self._backend.read(), self._previous)
        await self._apply(operations, f"map version {peer_map.version}")
        self._previous = desired
        return len(operations)

    def _desired_peers(self, peer_map: PeerMapCopy) -> dict[str, PeerConfig]:
        peers = peer_map.wireguard_peers()
        keepalive = self._persistent_keepalive
        if keepalive is None:
            return peers
        return {
            key: dataclasses.replace(config, persistent_keepalive=keepalive)
            for key, config in peers.items()
        }

    async def refresh_endpoints(self, peer_map: PeerMapCopy) -> int:
        """Set every peer's endpoint again, unchanged.

        After this host's underlay address changed, wireguard-go keeps
        sending from the old source address it remembered per peer; setting
        an endpoint makes it forget that and pick a source again.
        """
        async with self._lock:
            if not self.started:
                return 0
            present = (await self._backend.read()).peers
            operations: list[Operation] = [
                UpdatePeer(public_key=key, endpoint=config.endpoint)
                for key, config in sorted(peer_map.wireguard_peers().items())
                if config.endpoint is not None and key in present
            ]
            await self._apply(operations, "an underlay address change")
            return len(operations)

    async def _apply(self, operations: list[Operation], why: str) -> None:
        if not operations:
            return
        await self._backend.apply(operations)
        self.operations_applied += len(operations)
        log.info("applied %d WireGuard operations for %s", len(operations), why)
        if self._on_applied is not None:
            self._on_applied(self.operations_applied)

    async def _restart(self) -> None:
        if isinstance(self._backend, UserspaceBackend):
            await self._backend.ensure_running()
        self._addresses = None
        self._previous = None  # a new device: repair every difference

    async def remove(self) -> None:
        async with self._lock:
            if self.started or isinstance(self._backend, UserspaceBackend):
                try:
                    await self._backend.remove()
                except WireGuardError as exc:
                    log.warning("could not remove the interface: %s", exc)
            self._addresses = None

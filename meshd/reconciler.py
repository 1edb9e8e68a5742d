"""Keeps the WireGuard device equal to the node's peer map.

Desired state (the map) and actual state (read back from the device) go in;
the smallest list of operations comes out (``wireguard.reconcile.plan``).
It runs after every map or delta and on a timer, so a peer removed or
changed by hand is put back and one added by hand is removed. A device that
already matches gets zero operations: restarting meshd changes nothing.
"""

from __future__ import annotations

import asyncio
import logging

from nacl.public import PrivateKey

from meshd.peermap import PeerMapCopy
from meshd.wireguard.backend import WireGuardBackend, WireGuardError
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
    ) -> None:
        self._backend = backend
        self._interface = interface
        self._private_key = encode_key(bytes(private_key))
        self._listen_port = listen_port
        self._mtu = mtu
        self._addresses: list[str] | None = None
        self._lock = asyncio.Lock()
        # Operations applied so far, for `meshd status` and tests.
        self.operations_applied = 0

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
            peers=peer_map.wireguard_peers(),
        )
        try:
            check_no_overlap(desired.peers)
        except OverlappingAllowedIPs as exc:
            # Applying it would silently move a prefix between peers; the
            # device keeps its last good configuration instead.
            log.error("refusing map version %d: %s", peer_map.version, exc)
            return 0
        operations = plan(desired, await self._backend.read())
        if operations:
            await self._backend.apply(operations)
            self.operations_applied += len(operations)
            log.info(
                "applied %d WireGuard operations for map version %d",
                len(operations),
                peer_map.version,
            )
        return len(operations)

    async def _restart(self) -> None:
        if isinstance(self._backend, UserspaceBackend):
            await self._backend.ensure_running()
        self._addresses = None

    async def remove(self) -> None:
        async with self._lock:
            if self.started or isinstance(self._backend, UserspaceBackend):
                try:
                    await self._backend.remove()
                except WireGuardError as exc:
                    log.warning("could not remove the interface: %s", exc)
            self._addresses = None

"""``meshd up``: a few loops, each with one job.

- connect-and-sync: hold the Sync stream; on failure back off (capped,
  jittered) and try the next coordinator address; the hello carries the
  last version applied;
- reconcile: every few seconds make the device match the map again, so
  drift (a peer removed by hand, a wireguard-go that died) is repaired.

While no coordinator is reachable the device keeps its last good
configuration: the data plane never waits for the control plane.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import grpc

from meshd.backoff import Backoff
from meshd.channel import open_channel
from meshd.errors import MeshdError, NodeRevoked
from meshd.peermap import PeerMapCopy
from meshd.reconciler import Reconciler
from meshd.session import CoordinatorMismatch, ReconnectRequested, SyncSession
from meshd.state import StateDir
from meshd.wireguard.backend import WireGuardBackend, WireGuardError
from meshd.wireguard.netconf import underlay_addresses

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpOptions:
    interface: str
    listen_port: int
    mtu: int
    coordinators: tuple[str, ...]
    reconcile_interval: float
    keepalive_interval: float


class Daemon:
    def __init__(
        self, state: StateDir, backend: WireGuardBackend, options: UpOptions
    ) -> None:
        self._state = state
        self._options = options
        self._identity = state.load_identity()
        self._key = state.load_key()
        self._map = self._restore_map()
        self._reconciler = Reconciler(
            backend, options.interface, self._key, options.listen_port, options.mtu
        )

    def _restore_map(self) -> PeerMapCopy:
        saved = self._state.load_map()
        if saved is not None:
            try:
                return PeerMapCopy.restore(self._identity.public_key, saved)
            except ValueError as exc:
                self._state.discard_map(f"the saved map is not usable ({exc})")
        return PeerMapCopy(self._identity.public_key)

    async def run(self) -> None:
        if self._map.addresses:
            # Configure from the saved map first: the mesh works even if no
            # coordinator answers, and an unchanged map changes nothing.
            await self._reconciler.converge(self._map)
        reconcile = asyncio.create_task(self._reconcile_forever())
        try:
            await self._sync_forever()
        except NodeRevoked as revoked:
            log.warning("%s; removing the interface and the identity", revoked)
            await self._reconciler.remove()
            self._state.mark_revoked(str(revoked))
            raise
        finally:
            reconcile.cancel()

    async def _sync_forever(self) -> None:
        backoff = Backoff()
        targets = self._targets()
        attempt = 0
        while True:
            target = targets[attempt % len(targets)]
            attempt += 1
            session = SyncSession(
                self._identity,
                self._key,
                self._map,
                self._on_map,
                await self._endpoints(),
                self._options.listen_port,
                self._options.keepalive_interval,
            )
            try:
                async with open_channel(target) as channel:
                    await self._hold(session, channel, backoff)
                log.info("stream to %s ended; reconnecting", target)
            except grpc.aio.AioRpcError as exc:
                # PERMISSION_DENIED (unknown or revoked key) is not taken as
                # a revocation: only an explicit Revoked message wipes the
                # identity, so a coordinator restored from an old backup
                # cannot make a fleet forget itself. Keep trying, loudly.
                level = (
                    logging.ERROR
                    if exc.code() == grpc.StatusCode.PERMISSION_DENIED
                    else logging.WARNING
                )
                log.log(
                    level,
                    "stream to %s failed: %s %s",
                    target,
                    exc.code().name,
                    exc.details(),
                )
            except ReconnectRequested as asked:
                # Not a failure: the coordinator is shutting down. Come back
                # soon (spread out, so thousands of nodes do not arrive at
                # once), to the next address, without growing the backoff.
                delay = random.uniform(0, max(0.05, asked.within))
                log.info("%s: reconnecting in %.2f s", asked, delay)
                await asyncio.sleep(delay)
                continue
            except CoordinatorMismatch as exc:
                log.error("%s (at %s)", exc, target)
            except NodeRevoked:
                raise
            except (MeshdError, WireGuardError) as exc:
                # The device keeps its last good configuration; the stream is
                # opened again and the map re-applied after the backoff.
                log.warning("stream to %s ended with an error: %s", target, exc)
            delay = await backoff.wait()
            log.info("reconnecting after %.2f s", delay)

    async def _hold(
        self, session: SyncSession, channel: grpc.aio.Channel, backoff: Backoff
    ) -> None:
        run = asyncio.create_task(session.run(channel))
        synced = asyncio.create_task(session.synced.wait())
        done, _ = await asyncio.wait({run, synced}, return_when=asyncio.FIRST_COMPLETED)
        if synced in done:
            backoff.reset()  # a stream that synced was healthy
        else:
            synced.cancel()
        await run

    async def _on_map(self) -> None:
        self._state.save_map(self._map.saved())
        await self._reconciler.converge(self._map)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.reconcile_interval)
            if not self._map.addresses:
                continue
            try:
                await self._reconciler.converge(self._map)
            except Exception:
                log.exception("reconcile failed; retrying at the next interval")

    def _targets(self) -> tuple[str, ...]:
        targets = self._options.coordinators or (self._identity.coordinator_target,)
        if not targets:
            raise MeshdError("no coordinator address: pass --coordinator")
        return targets

    async def _endpoints(self) -> list[str]:
        port = self._options.listen_port
        addresses = await underlay_addresses(exclude=[self._options.interface])
        return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]

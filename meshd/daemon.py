"""``meshd up``: a few loops, each with one job.

- connect-and-sync: hold the Sync stream; on failure back off (capped,
  jittered) and try the next coordinator address; the hello carries the
  last version applied, so a reconnect resumes instead of starting over;
- reconcile: every few seconds make the device match the map again, so
  drift (a peer removed by hand, a wireguard-go that died) is repaired;
- endpoints: watch the host's addresses and tell the coordinator when the
  node's underlay endpoints change.

While no coordinator is reachable the device keeps its last good
configuration: the data plane never waits for the control plane. What the
loops are doing is written to DIR/status.json for `meshd status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass

import grpc
from nacl.public import PrivateKey

from meshd.backoff import Backoff
from meshd.channel import open_channel
from meshd.endpoints import current_endpoints, watch_endpoints
from meshd.errors import MeshdError, NodeRevoked
from meshd.peermap import PeerMapCopy
from meshd.reconciler import Reconciler
from meshd.rotation import finish_interrupted_rotation
from meshd.session import CoordinatorMismatch, Hello, ReconnectRequested, SyncSession
from meshd.state import StateDir
from meshd.status import NodeStatus, StatusWriter, StreamState, utc_now
from meshd.wireguard.backend import WireGuardBackend, WireGuardError
from runmesh.wgkey import encode_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpOptions:
    interface: str
    listen_port: int
    mtu: int
    coordinators: tuple[str, ...]
    reconcile_interval: float
    keepalive_interval: float
    # None: use the interval each peer comes with from the coordinator.
    persistent_keepalive: int | None = None
    backend_name: str = "userspace"


class StreamRestart(Exception):
    """The stream is dropped on purpose (the underlay address it used went
    away) and opened again at once."""


class Daemon:
    def __init__(
        self, state: StateDir, backend: WireGuardBackend, options: UpOptions
    ) -> None:
        self._state = state
        self._options = options
        self._identity, self._key = state.load_node()
        self._map = self._restore_map()
        self._status = StatusWriter(
            state,
            NodeStatus(
                interface=options.interface,
                backend=options.backend_name,
                listen_port=options.listen_port,
                pid=os.getpid(),
                version=self._map.version,
            ),
        )
        self._reconciler = Reconciler(
            backend,
            options.interface,
            self._key,
            options.listen_port,
            options.mtu,
            persistent_keepalive=options.persistent_keepalive,
            on_applied=lambda count: self._status.update(operations_applied=count),
        )
        self._session: SyncSession | None = None
        self._endpoints: list[str] = []
        self._restart = asyncio.Event()
        self._wake = asyncio.Event()
        self._connections = 0

    def _restore_map(self) -> PeerMapCopy:
        saved = self._state.load_map()
        public_key, node_id = self._identity.public_key, self._identity.node_id
        if saved is not None:
            try:
                return PeerMapCopy.restore(public_key, saved, node_id)
            except ValueError as exc:
                self._state.discard_map(f"the saved map is not usable ({exc})")
        return PeerMapCopy(public_key, node_id=node_id)

    async def run(self) -> None:
        self._status.update()
        if self._map.addresses:
            # Configure from the saved map first: the mesh works even if no
            # coordinator answers, and an unchanged map changes nothing.
            await self._reconciler.converge(self._map)
        self._endpoints = await self._current_endpoints()
        loops = [
            asyncio.create_task(self._reconcile_forever()),
            asyncio.create_task(self._watch_endpoints()),
        ]
        try:
            await self._sync_forever()
        except NodeRevoked as revoked:
            log.warning("%s; removing the interface and the identity", revoked)
            await self._reconciler.remove()
            self._state.mark_revoked(str(revoked))
            self._status.update(state=StreamState.REVOKED, last_error=str(revoked))
            raise
        except BaseException as exc:
            self._status.update(state=StreamState.STOPPED, last_error=repr(exc))
            raise
        finally:
            for loop in loops:
                loop.cancel()

    async def _sync_forever(self) -> None:
        backoff = Backoff()
        targets = self._targets()
        attempt = 0
        while True:
            target = targets[attempt % len(targets)]
            attempt += 1
            await self._reload_key()
            error = await self._attempt(target, backoff)
            if error is None:
                continue  # asked to come back at once
            self._status.update(state=StreamState.BACKOFF, last_error=error)
            delay = backoff.next_delay()
            log.info("reconnecting after %.2f s", delay)
            await self._sleep_unless_woken(delay)

    async def _attempt(self, target: str, backoff: Backoff) -> str | None:
        """One stream to `target`; the error to back off for, or None to
        reconnect at once."""
        self._status.update(state=StreamState.CONNECTING, coordinator=target)
        session = SyncSession(
            self._identity,
            self._key,
            self._map,
            self._on_map,
            self._endpoints,
            self._options.listen_port,
            self._options.keepalive_interval,
        )
        try:
            async with open_channel(target) as channel:
                await self._hold(session, channel, backoff)
            log.info("stream to %s ended; reconnecting", target)
            return "the stream ended"
        except grpc.aio.AioRpcError as exc:
            denied = exc.code() == grpc.StatusCode.PERMISSION_DENIED
            if denied and await self._finish_rotation(target):
                return None
            # PERMISSION_DENIED (unknown or revoked key) is not taken as a
            # revocation: only an explicit Revoked message wipes the
            # identity, so a coordinator restored from an old backup cannot
            # make a fleet forget itself. Keep trying, loudly.
            level = logging.ERROR if denied else logging.WARNING
            error = f"{exc.code().name} {exc.details()}"
            log.log(level, "stream to %s failed: %s", target, error)
            return error
        except ReconnectRequested as asked:
            # Not a failure: the coordinator is shutting down, or the key
            # changed. Come back soon (spread out, so thousands of nodes do
            # not arrive at once), without growing the backoff.
            delay = random.uniform(0, max(0.05, asked.within))
            log.info("%s: reconnecting in %.2f s", asked, delay)
            await asyncio.sleep(delay)
            return None
        except StreamRestart as restart:
            log.info("%s; reconnecting now", restart)
            return None
        except CoordinatorMismatch as exc:
            log.error("%s (at %s)", exc, target)
            return str(exc)
        except NodeRevoked:
            raise
        except (MeshdError, WireGuardError) as exc:
            # The device keeps its last good configuration; the stream is
            # opened again and the map re-applied after the backoff.
            log.warning("stream to %s ended with an error: %s", target, exc)
            return str(exc)
        finally:
            self._session = None

    async def _hold(
        self, session: SyncSession, channel: grpc.aio.Channel, backoff: Backoff
    ) -> None:
        self._restart.clear()
        self._session = session
        run = asyncio.create_task(session.run(channel))
        synced = asyncio.create_task(session.synced.wait())
        restart = asyncio.create_task(self._restart.wait())
        try:
            done, _ = await asyncio.wait(
                {run, synced}, return_when=asyncio.FIRST_COMPLETED
            )
            if synced in done:
                backoff.reset()  # a stream that synced was healthy
                self._note_connected(session)
            done, _ = await asyncio.wait(
                {run, restart}, return_when=asyncio.FIRST_COMPLETED
            )
            if run not in done:
                run.cancel()
                await asyncio.wait({run})
                raise StreamRestart("an underlay address of this host went away")
            await run
        finally:
            synced.cancel()
            restart.cancel()
            run.cancel()

    def _note_connected(self, session: SyncSession) -> None:
        self._connections += 1
        self._status.update(
            state=StreamState.CONNECTED,
            first_message=session.first_message,
            last_error=None,
            last_connected_at=utc_now(),
            reconnects=self._connections - 1,
        )
        log.info(
            "synced node_id=%s version=%d first_message=%s",
            self._identity.node_id,
            self._map.version,
            session.first_message,
        )

    async def _on_map(self) -> None:
        self._state.save_map(self._map.saved())
        self._status.update(version=self._map.version)
        await self._reconciler.converge(self._map)

    async def _reload_key(self) -> None:
        """Pick up a key rotated by `meshd rotate-key` since the last stream."""
        try:
            identity, key = self._state.load_node()
        except MeshdError as exc:
            log.warning("keeping the key in use: %s", exc)
            return
        self._identity = identity
        if bytes(key) == bytes(self._key):
            return
        await self._use_key(key)

    async def _use_key(self, key: PrivateKey) -> None:
        self._key = key
        public_key = encode_key(bytes(key.public_key))
        log.info(
            "using the rotated key node_id=%s public_key=%s",
            self._identity.node_id,
            public_key,
        )
        self._map.rekey(public_key)
        self._reconciler.set_private_key(key)
        if self._map.addresses:
            await self._reconciler.converge(self._map)

    async def _finish_rotation(self, target: str) -> bool:
        """After PERMISSION_DENIED: True if private.key.next was accepted
        (and is now the node's key)."""
        hello = Hello(self._map.version, self._endpoints, self._options.listen_port)
        try:
            finished = await finish_interrupted_rotation(self._state, target, hello)
        except (grpc.aio.AioRpcError, MeshdError) as exc:
            log.warning("could not try private.key.next: %s", exc)
            return False
        if finished is None:
            return False
        await self._reload_key()
        return True

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.reconcile_interval)
            if not self._map.addresses:
                continue
            try:
                await self._reconciler.converge(self._map)
            except Exception:
                log.exception("reconcile failed; retrying at the next interval")

    async def _watch_endpoints(self) -> None:
        exclude, port = [self._options.interface], self._options.listen_port
        while True:
            try:
                async for found in watch_endpoints(exclude, port, self._endpoints):
                    await self._endpoints_changed(found)
            except Exception:
                log.exception("watching the underlay failed; watching again")
                await asyncio.sleep(1)

    async def _endpoints_changed(self, endpoints: list[str]) -> None:
        gone = set(self._endpoints) - set(endpoints)
        log.info(
            "underlay endpoints changed node_id=%s endpoints=%s",
            self._identity.node_id,
            ",".join(endpoints) or "none",
        )
        self._endpoints = endpoints
        self._status.update(endpoints=endpoints)
        self._wake.set()  # a stream waiting out a backoff may work now
        if gone:
            await self._reconciler.refresh_endpoints(self._map)
        session = self._session
        if session is None:
            return  # the next hello carries them
        if gone:
            # The stream may run over the address that went away: its
            # packets would go nowhere until the transport gives up, a
            # minute later. A new stream carries the endpoints in its hello.
            self._restart.set()
        else:
            await session.send_endpoints(endpoints)

    async def _sleep_unless_woken(self, delay: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    def _targets(self) -> tuple[str, ...]:
        targets = self._options.coordinators or (self._identity.coordinator_target,)
        if not targets:
            raise MeshdError("no coordinator address: pass --coordinator")
        return targets

    async def _current_endpoints(self) -> list[str]:
        endpoints = await current_endpoints(
            [self._options.interface], self._options.listen_port
        )
        self._status.update(endpoints=endpoints)
        return endpoints

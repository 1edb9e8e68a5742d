"""The mesh as a state machine: whatever happens, nodes end up with the truth.

Hypothesis drives a real coordinator process and simulated nodes
(``simnode.SimNode``: real keys and challenge, meshd's own ``PeerMapCopy``)
through joins, renames, revocations, endpoint changes, clean and unclean
disconnects, resumes from stale versions and coordinator restarts (SIGTERM
and SIGKILL, on the same database and port). After every step, once the
mesh is quiet, every connected node's map must equal what the coordinator
states for it (GetNodeConfig and ListNodes), versions must never have gone
backwards, no node may hold two peers with overlapping allowed IPs, and a
revoked node's stream must have been told so or refused.

The event loop that holds the streams runs in a thread of its own, so the
streams (and their keepalives) live on between Hypothesis's steps.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import grpc
import pytest
from domain_db import create_org_key
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from simnode import MeshOrg, SimNode, backwards, map_mismatches, overlapping_peers
from support.processes import Coordinator, start_coordinator

T = TypeVar("T")

FLAGS = ["--presence-grace", "0.5", "--keepalive", "1"]
MAX_NODES = 6
MAX_RESTARTS = 1
ENDPOINTS = [f"192.0.2.{i}:51820" for i in range(1, 6)] + [
    f"[2001:db8::{i}]:51820" for i in range(1, 4)
]
_orgs = itertools.count(1)


class LoopThread:
    """An asyncio loop running in a thread; ``run`` waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Env:
    workdir: Path
    coordinator: Coordinator
    loop: LoopThread

    def restart(self, sig: int, nodes: list[SimNode]) -> None:
        """Stop the coordinator with ``sig`` and start it on the same
        database and port; the nodes lose their streams meanwhile."""
        proc = self.coordinator.proc
        proc.send_signal(sig)
        # Nodes drop their streams as the server goes away (after SIGTERM
        # the server would otherwise hold them for its 5 s grace).
        self.loop.run(_drop_all(nodes))
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        old = self.coordinator
        self.coordinator = start_coordinator(
            self.workdir, port=old.port, db_url=old.db_url, extra=FLAGS
        )


async def _drop_all(nodes: list[SimNode]) -> None:
    for node in nodes:
        await node.drop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = Path(tmp_path_factory.mktemp("mesh-properties"))
    loop = LoopThread()
    environment = Env(workdir, start_coordinator(workdir, extra=FLAGS), loop)
    try:
        yield environment
    finally:
        environment.coordinator.stop()
        loop.close()


class MeshMachine(RuleBasedStateMachine):
    env: ClassVar[Env]

    def __init__(self) -> None:
        super().__init__()
        env = self.env
        self.restarts = 0
        number = next(_orgs)
        key = self.run(
            create_org_key(env.coordinator.db_url, f"props-{number}", f"a@{number}.t")
        )
        self.org = MeshOrg(env.coordinator.target, env.coordinator.db_url, key)
        self.revoked: list[SimNode] = []
        # Streams on which the node claimed a version it did not hold: the
        # only ones where a delta may fail to follow its map.
        self.lied_on: set[int] = set()
        self.names = itertools.count(1)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.env.loop.run(coro, timeout)

    def teardown(self) -> None:
        self.run(self.org.close())

    # ---- who is where ----

    def active(self) -> list[SimNode]:
        return [n for n in self.org.nodes if n not in self.revoked]

    def connected(self) -> list[SimNode]:
        return [n for n in self.active() if n.connected]

    def away(self) -> list[SimNode]:
        return [n for n in self.active() if not n.connected]

    def has_connected(self) -> bool:
        return bool(self.connected())

    def has_away(self) -> bool:
        return bool(self.away())

    # ---- steps ----

    @initialize()
    def two_nodes(self) -> None:
        for _ in range(2):
            self.join()

    @precondition(lambda self: len(self.active()) < MAX_NODES)
    @rule()
    def join(self) -> None:
        async def work() -> None:
            node = await self.org.join(f"dev-{len(self.org.nodes)}")
            await node.connect()

        self.run(work())

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.active()), label="node")
        self.run(self.org.admin.rename(node.node_id, f"host-{next(self.names)}"))

    @precondition(lambda self: len(self.active()) > 1)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.active()), label="node")
        was_connected = node.connected

        async def work() -> None:
            await self.org.admin.revoke(node.node_id)
            if was_connected:
                end = await node.wait_ended()
                assert end.revoked or end.code == grpc.StatusCode.PERMISSION_DENIED, end
                await node.disconnect()
            try:
                await node.connect()
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
            else:
                raise AssertionError("a revoked node's key opened a stream")

        self.revoked.append(node)
        self.run(work())

    @precondition(has_connected)
    @rule(data=st.data())
    def change_endpoints(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.connected()), label="node")
        endpoints = data.draw(
            st.lists(st.sampled_from(ENDPOINTS), max_size=3, unique=True),
            label="endpoints",
        )

        async def work() -> None:
            await node.disconnect()
            await node.connect(endpoints=endpoints, listen_port=51820)

        self.run(work())

    @precondition(has_connected)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.connected()), label="node")
        self.run(node.disconnect())

    @precondition(has_connected)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.connected()), label="node")
        self.run(node.drop())

    @precondition(has_away)
    @rule(data=st.data())
    def reconnect(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.away()), label="node")
        self.run(node.connect())

    @precondition(has_connected)
    @rule(data=st.data(), restore=st.booleans())
    def reconnect_stale(self, data: st.DataObject, restore: bool) -> None:
        """Come back claiming an older version: with the map held then (a
        restored backup) or, without ``restore``, a version it does not
        hold (the node must then ask for, and get, a full map)."""
        node = data.draw(st.sampled_from(self.connected()), label="node")
        older = sorted(v for v in node.history if v < node.copy.version)
        stale = data.draw(st.sampled_from(older or [0]), label="stale version")

        async def work() -> None:
            await node.disconnect()
            await node.connect(last_version=stale, restore=restore)

        self.run(work())
        if not restore and stale:
            self.lied_on.add(node.stream_no)

    # A restart costs seconds of process start-up: one per example.
    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule(sig=st.sampled_from([signal.SIGTERM, signal.SIGKILL]))
    def restart_coordinator(self, sig: signal.Signals) -> None:
        self.restarts += 1
        were_connected = self.connected()
        self.env.restart(sig, were_connected)
        self.org.target = self.env.coordinator.target

        async def work() -> None:
            await self.org.admin.reset()
            for node in were_connected:
                await node.connect()

        self.run(work())

    # ---- what must always hold ----

    @invariant()
    def nodes_hold_the_coordinators_truth(self) -> None:
        connected = self.connected()
        quiet = self.run(self.org.quiet(connected))
        for node in connected:
            problems = map_mismatches(node, quiet.truth[node.node_id])
            assert not problems, (node.node.name, quiet.version, problems)
            clashes = overlapping_peers(node.copy.peers.values())
            assert not clashes, (node.node.name, clashes)
        for node in self.org.nodes:
            assert not backwards(node.sent_versions()), (
                node.node.name,
                node.sent_versions(),
            )
            unexpected = [g for g in node.gaps if g[0] not in self.lied_on]
            assert not unexpected, (node.node.name, unexpected)
        for node in self.revoked:
            assert not node.connected
            assert any(
                e.revoked or e.code == grpc.StatusCode.PERMISSION_DENIED
                for e in node.ends
            ), (node.node.name, node.ends)


def test_connected_nodes_always_converge_on_the_coordinators_truth(env: Env) -> None:
    MeshMachine.env = env
    run_state_machine_as_test(
        MeshMachine,
        settings=settings(
            max_examples=8,
            stateful_step_count=15,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        ),
    )

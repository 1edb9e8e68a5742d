"""Sync-stream behaviours that broke, or would break quietly, pinned down.

Each test drives simulated nodes (``simnode.SimNode``: real keys, the real
challenge, meshd's own ``PeerMapCopy``) against a real coordinator process
and compares what the nodes hold with what the coordinator states through
AdminService. One coordinator serves the module, each test an org of its
own; the restart test has a coordinator of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from domain_db import create_org_key
from simnode import MeshOrg, backwards, map_mismatches
from support.processes import Coordinator, start_coordinator

from runmesh.v1 import node_pb2

pytestmark = pytest.mark.anyio

GRACE = 0.5
KEEPALIVE = 0.5
STORM_QUIET = 0.25
FLAGS = ["--presence-grace", str(GRACE), "--keepalive", str(KEEPALIVE)]
# A client that reads nothing must stop the coordinator's writes soon: no
# growing flow-control window, and a small read-ahead.
SLOW_READER = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
ONLINE, OFFLINE = node_pb2.NODE_STATUS_ONLINE, node_pb2.NODE_STATUS_OFFLINE
_orgs = itertools.count(1)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    service = start_coordinator(Path(tmp_path_factory.mktemp("streams")), extra=FLAGS)
    try:
        yield service
    finally:
        service.stop()


async def new_org(coordinator: Coordinator) -> MeshOrg:
    number = next(_orgs)
    key = await create_org_key(coordinator.db_url, f"org-{number}", f"a@{number}.t")
    return MeshOrg(coordinator.target, coordinator.db_url, key)


@pytest.fixture
async def org(coordinator: Coordinator) -> AsyncIterator[MeshOrg]:
    mesh = await new_org(coordinator)
    try:
        yield mesh
    finally:
        await mesh.close()


def assert_matches_truth(org: MeshOrg, truth: dict[str, object]) -> None:
    for node in org.nodes:
        if node.connected:
            problems = map_mismatches(node, truth[node.node_id])  # type: ignore[arg-type]
            assert not problems, (node.node.name, problems)


async def test_a_delta_removing_the_last_peer_leaves_the_node_with_no_peers(
    org: MeshOrg,
) -> None:
    keeper, leaver = await org.join("keeper"), await org.join("leaver")
    await keeper.connect()
    await leaver.connect()
    await org.quiet()
    assert set(keeper.applied_view()) == {leaver.public_key}

    await org.admin.revoke(leaver.node_id)

    await keeper.wait_for(lambda: not keeper.applied_view())
    quiet = await org.quiet([keeper])
    assert keeper.copy.peers == {}
    assert quiet.truth[keeper.node_id].peers == {}
    last = keeper.received[-1]
    deltas = [r.message.delta for r in keeper.received if r.kind == "delta"]
    assert any(list(d.removed) == [leaver.public_key] for d in deltas), last


async def test_a_late_ending_old_stream_leaves_the_node_online(org: MeshOrg) -> None:
    watcher, roamer = await org.join("watcher"), await org.join("roamer")
    await watcher.connect()
    await roamer.connect(endpoints=["192.0.2.10:51820"], listen_port=51820)
    await org.quiet()
    newer = org.twin(roamer)
    await newer.connect(endpoints=["192.0.2.10:51820"], listen_port=51820)

    end = await roamer.disconnect()  # the old stream ends after the new began

    assert end is not None and end.code == grpc.StatusCode.OK
    await asyncio.sleep(GRACE * 3)
    assert await org.status(roamer) == ONLINE
    quiet = await org.quiet([watcher, newer])
    assert watcher.applied_view()[roamer.public_key].online
    assert quiet.truth[watcher.node_id].peers[roamer.public_key].online
    assert_matches_truth(org, quiet.truth)


async def test_endpoints_sent_right_behind_the_hello_are_not_lost(
    org: MeshOrg,
) -> None:
    """Regression: an EndpointUpdate that reached the coordinator while the
    stream was still being set up (meshd sends one as soon as it has said
    hello) was dropped without a word; peers kept the hello's endpoint."""
    watcher, roamer = await org.join("watcher"), await org.join("roamer")
    await watcher.connect()

    await roamer.connect(
        endpoints=["192.0.2.10:51820"],
        listen_port=51820,
        update_after_hello=["198.51.100.7:51820"],
    )

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = watcher.applied_view().get(roamer.public_key)
        if seen is not None and seen.endpoint == "198.51.100.7:51820":
            break
        await asyncio.sleep(0.05)
    quiet = await org.quiet()
    assert watcher.applied_view()[roamer.public_key].endpoint == "198.51.100.7:51820"
    assert_matches_truth(org, quiet.truth)


async def test_a_slow_consumer_costs_only_itself_and_recovers_with_a_full_map(
    org: MeshOrg,
) -> None:
    renamed = await org.join("renamed")
    slow = await org.join("slow", channel_options=SLOW_READER)
    others = [await org.join(f"n{i}") for i in range(18)]
    for node in org.nodes:
        await node.connect()
    await org.quiet()
    first_stream = slow.stream_no
    slow.pause_reading()

    # One delta per rename (each waits until a fast node has it), so the
    # slow node's queue of 64 fills up once its flow-control window has.
    fast = others[0]
    seen = len(fast.kinds())
    for i in range(90):
        await org.admin.rename(renamed.node_id, f"renamed-{i}")
        await fast.wait_for(
            lambda i=i: fast.applied_view()[renamed.public_key].name == f"renamed-{i}"
        )
    await org.quiet([renamed, *others])
    pushed = fast.kinds()[seen:].count("delta")
    assert pushed > 64 + 10, f"only {pushed} deltas: the slow queue cannot fill"

    started = time.monotonic()
    await org.admin.rename(renamed.node_id, "final-name")
    for node in others:
        await node.wait_for(
            lambda n=node: n.applied_view()[renamed.public_key].name == "final-name"
        )
    latency = time.monotonic() - started
    assert latency < 1.0, f"the others waited {latency:.2f}s behind a slow consumer"

    slow.resume_reading()
    quiet = await org.quiet()
    assert_matches_truth(org, quiet.truth)
    assert slow.applied_view()[renamed.public_key].name == "final-name"
    kinds = slow.kinds(first_stream)
    assert "full_map" in kinds[1:], "the slow consumer was never sent a fresh map"
    assert not slow.gaps
    assert slow.connected


async def test_the_version_never_goes_backwards_across_a_coordinator_restart(
    tmp_path: Path,
) -> None:
    service = start_coordinator(tmp_path, extra=FLAGS)
    org = await new_org(service)
    try:
        a, b = await org.join("a"), await org.join("b")
        await a.connect()
        await b.connect()
        before = (await org.quiet()).version
        await org.admin.rename(b.node_id, "b-renamed")
        before = (await org.quiet()).version
        earlier = a.sent_versions() + b.sent_versions()

        # In a thread: the event loop must keep reading the streams, or the
        # coordinator's shutdown waits on Reconnects nobody takes.
        await asyncio.to_thread(service.stop, signal.SIGTERM)
        for node in (a, b):
            end = await node.wait_ended()
            assert end.code != grpc.StatusCode.PERMISSION_DENIED
            await node.drop()
        service = start_coordinator(
            tmp_path, port=service.port, db_url=service.db_url, extra=FLAGS
        )
        await org.admin.reset()
        held = a.copy.version
        first = await a.connect()
        assert first.WhichOneof("kind") == "delta", first
        assert first.delta.from_version == held
        await b.connect()
        await org.admin.rename(b.node_id, "b-after-restart")

        quiet = await org.quiet()
        assert quiet.version > max(earlier) >= before
        assert_matches_truth(org, quiet.truth)
        for node in (a, b):
            assert not backwards(node.sent_versions()), node.sent_versions()
            assert not node.gaps
    finally:
        await org.close()
        service.stop()


async def test_a_node_resuming_after_missed_changes_gets_them_as_one_delta(
    org: MeshOrg,
) -> None:
    away, b, c, d = [await org.join(n) for n in ("away", "b", "c", "d")]
    for node in org.nodes:
        await node.connect()
    await org.quiet()
    await away.disconnect()
    await org.wait_status(away, OFFLINE)
    await org.quiet()
    held = away.copy.version
    offline_change = org.version()  # its own going offline: missed as well

    await org.admin.rename(b.node_id, "b-while-away")
    await org.admin.rename(c.node_id, "c-while-away")
    await org.admin.revoke(d.node_id)
    await org.quiet([b, c])
    current = org.version()
    assert current == offline_change + 3

    first = await away.connect()

    assert first.WhichOneof("kind") == "delta", first
    delta = first.delta
    assert (delta.from_version, delta.version) == (held, current)
    # Its own going offline (its own key: a change to itself), b and c.
    assert sorted(p.public_key for p in delta.upserted) == sorted(
        n.public_key for n in (away, b, c)
    )
    assert list(delta.removed) == [d.public_key]
    quiet = await org.quiet()
    assert_matches_truth(org, quiet.truth)
    assert not away.gaps


async def test_a_version_the_change_log_cannot_cover_gets_a_full_map(
    org: MeshOrg,
) -> None:
    a, b = await org.join("a"), await org.join("b")
    await a.connect()
    await b.connect()
    await org.quiet()
    await a.disconnect()
    ahead = org.version() + 100

    first = await a.connect(last_version=ahead)

    assert first.WhichOneof("kind") == "full_map", first
    assert first.full_map.version < ahead
    quiet = await org.quiet()
    assert_matches_truth(org, quiet.truth)


def commit_bursts(org: MeshOrg, after: int, gap: float) -> list[list[int]]:
    """The change-log versions after ``after``, split wherever two
    consecutive changes were written more than ``gap`` seconds apart."""
    with contextlib.closing(
        sqlite3.connect(f"file:{org.db_path}?mode=ro", uri=True)
    ) as db:
        rows = db.execute(
            "SELECT version, created_at FROM mesh_changes"
            " WHERE org_id = ? AND version > ? ORDER BY version",
            (org.org_id, after),
        ).fetchall()
    bursts: list[list[int]] = []
    last: dt.datetime | None = None
    for version, created in rows:
        at = dt.datetime.fromisoformat(str(created))
        if last is None or (at - last).total_seconds() > gap:
            bursts.append([])
        bursts[-1].append(version)
        last = at
    return bursts


async def test_concurrent_renames_are_coalesced_into_few_deltas(
    tmp_path: Path,
) -> None:
    # SQLite serialises the 30 writers, and on a busy machine their commits
    # land tens of milliseconds apart (its busy handler sleeps up to 100 ms
    # between tries): with the default window of 20 ms nothing would be
    # "close together". A window of 250 ms makes the storm one burst.
    service = start_coordinator(
        tmp_path, extra=[*FLAGS, "--coalesce-ms", str(int(STORM_QUIET * 1000))]
    )
    org = await new_org(service)
    try:
        watcher, renamed = await org.join("watcher"), await org.join("renamed")
        await watcher.connect()
        await renamed.connect()
        before = (await org.quiet()).version
        seen = len(watcher.received)

        results = await asyncio.gather(
            *(org.admin.rename(renamed.node_id, f"storm-{i}") for i in range(30)),
            return_exceptions=True,
        )

        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        quiet = await org.quiet()
        received = watcher.received[seen:]
        deltas = [r.message.delta for r in received if r.kind == "delta"]
        assert_matches_truth(org, quiet.truth)
        assert watcher.applied_view()[renamed.public_key].name.startswith("storm-")
        assert renamed.copy.name == watcher.applied_view()[renamed.public_key].name
        bursts = commit_bursts(org, before, STORM_QUIET)
        assert len(deltas) <= 5, (
            f"{len(deltas)} deltas for 30 renames whose commits formed "
            f"{len(bursts)} bursts {[len(b) for b in bursts]}"
        )
    finally:
        await org.close()
        service.stop()


async def test_a_node_silent_past_its_keepalive_deadline_is_closed_and_goes_offline(
    org: MeshOrg,
) -> None:
    watcher, silent = await org.join("watcher"), await org.join("silent")
    await watcher.connect()
    silent.send_keepalives = False
    await silent.connect()
    await org.quiet()
    assert watcher.applied_view()[silent.public_key].online

    end = await silent.wait_ended(timeout=KEEPALIVE * 3 + 5)

    assert end.code == grpc.StatusCode.OK
    assert not end.revoked
    await org.wait_status(silent, OFFLINE, timeout=GRACE + 5)
    await watcher.wait_for(lambda: not watcher.applied_view()[silent.public_key].online)
    quiet = await org.quiet([watcher])
    assert_matches_truth(org, quiet.truth)


async def test_a_node_that_goes_away_with_writes_blocked_is_not_an_error(
    org: MeshOrg, coordinator: Coordinator
) -> None:
    """Regression: a node that stopped reading and then hung up made the
    write waiting on it fail, and the coordinator logged that as an
    unexpected error with a traceback. It is the node's going away."""
    errors_before = coordinator.log().count("unexpected error in Sync")
    hung_up_before = coordinator.log().count("stream ended: the node hung up")
    renamed = await org.join("renamed")
    slow = await org.join("slow", channel_options=SLOW_READER)
    fast = await org.join("fast")
    for node in org.nodes:
        await node.connect()
    await org.quiet()
    slow.pause_reading()
    for i in range(40):  # enough to fill the slow node's flow-control window
        await org.admin.rename(renamed.node_id, f"r{i}-" + "x" * 50)
        await fast.wait_for(
            lambda i=i: fast.applied_view()[renamed.public_key].name.startswith(
                f"r{i}-"
            )
        )
    await slow.drop()
    await asyncio.sleep(1.5)
    await org.admin.rename(renamed.node_id, "final")
    await fast.wait_for(lambda: fast.applied_view()[renamed.public_key].name == "final")
    log = coordinator.log()
    assert log.count("unexpected error in Sync") == errors_before
    assert log.count("stream ended: the node hung up") > hung_up_before
    assert fast.connected

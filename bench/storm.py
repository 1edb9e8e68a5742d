"""Reconnect storm: SIGKILL the coordinator under N synced nodes, restart it.

    python -m bench.storm --nodes 5000

N nodes connect and sync. An observer node (held by this process) opens one
stream too, so it is online like the rest. Then the coordinator is killed
with SIGKILL and started again on the same database and port. The nodes
reconnect with meshd's capped, jittered Backoff and resume with their last
version. ``converge_s`` runs from just before the new process is launched
until every node has a stream again, has received its first message on it
and holds the same version as every other node. Then the result is checked:
a fresh stream of the observer (a full map) gives the coordinator's version
and peers, AdminService.ListNodes gives the names, and every node's version
— and every kept PeerMapCopy's peer set and names — must match. Full maps
vs resumed deltas are counted on the nodes, from the first message of each
stream after the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time

from bench import flags, services, simfleet
from bench.report import emit, note
from runmesh.v1 import admin_pb2_grpc, mesh_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    simfleet.add_fleet_arguments(parser, nodes=1000)
    parser.add_argument(
        "--timeout",
        type=flags.seconds(1),
        default=300,
        help="give up converging after this many seconds",
    )
    args = parser.parse_args()
    with services.bench_run("storm", args.keep) as stack:
        run(args, stack)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    coordinator, fleet, created, approvals = simfleet.setup(args, stack)
    observer = asyncio.run(_link_observer(coordinator))
    note("connecting streams ...")
    fleet.call("connect", args=(args.connect_concurrency, 1800), timeout=1900)
    asyncio.run(_observe(coordinator, observer))
    before = fleet.wait_quiet(quiet=2.0, timeout=300)
    version_before = next(iter(before["versions"]))
    note(f"synced: {before['up']}/{before['nodes']} up at {dict(before['versions'])}")

    fleet.call("mark")
    coordinator.kill(signal.SIGKILL)
    note("coordinator killed; restarting")
    launched = coordinator.start()
    listening = time.time() - launched
    converged_at, status = _wait_converged(fleet, created, launched, args.timeout)
    converge_s = converged_at - launched if converged_at else float("nan")
    note(f"converged={converged_at is not None} in {converge_s:.2f}s; verifying")

    check = asyncio.run(_verify(coordinator, observer, fleet))
    ok = converged_at is not None and check["bad"] == 0 and check["version_ok"]
    result = {
        "nodes": created,
        "converge_s": converge_s,
        "full_maps": status["full_maps"],
        "resumed": status["resumed"],
        "converged": ok,
        "bad_maps": check["bad"],
        "maps_checked": check["maps_checked"],
        "version_before": version_before,
        "version_after": check["version"],
        "gaps": status["gaps"],
        "restart_listening_s": listening,
        "approvals_per_s": approvals,
        "loadavg": services.loadavg(),
        "cpus": coordinator.placement.as_json(),
    }
    rows = [
        ("nodes", created),
        ("restart until port open s", listening),
        ("restart until all nodes hold the map s", converge_s),
        ("first message after restart: full maps", status["full_maps"]),
        ("first message after restart: resumed deltas", status["resumed"]),
        ("version gaps (resync asked)", status["gaps"]),
        ("version before kill / after", f"{version_before} / {check['version']}"),
        ("nodes wrong vs truth", f"{check['bad']} {check['sample']}"),
        ("full PeerMapCopy peer sets compared", check["maps_checked"]),
        ("converged and correct", ok),
        ("machine load average (2 cores)", result["loadavg"]),
        ("CPUs", coordinator.placement.describe()),
    ]
    emit(f"bench.storm --nodes {args.nodes}", rows, result)


def _wait_converged(
    fleet: simfleet.Fleet, created: int, launched: float, timeout: float
) -> tuple[float | None, dict]:
    deadline = launched + timeout
    while True:
        status = fleet.status()
        now = time.time()
        if (
            status["synced_since_mark"] == created
            and status["up"] == created
            and len(status["versions"]) == 1
        ):
            return now, status
        if now > deadline:
            return None, status
        time.sleep(0.1)


async def _link_observer(coordinator: services.Coordinator) -> simfleet.Identity:
    async with simfleet.open_channel(coordinator.target) as channel:
        return await simfleet.link_node(
            mesh_pb2_grpc.MeshServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            coordinator.admin_key,
            f"observer{int(time.time()) % 100000}",
        )


async def _observe(coordinator: services.Coordinator, ident: simfleet.Identity):
    async with simfleet.open_channel(coordinator.target) as channel:
        return await simfleet.observe_full_map(channel, ident)


async def _verify(
    coordinator: services.Coordinator,
    observer: simfleet.Identity,
    fleet: simfleet.Fleet,
) -> dict:
    """Observer's full map and ListNodes against every node (bounded retries:
    the observer's own stream can change the map once)."""
    result: dict = {
        "bad": -1,
        "sample": [],
        "maps_checked": 0,
        "version": None,
        "version_ok": False,
    }
    for _attempt in range(3):
        full = await _observe(coordinator, observer)
        async with simfleet.open_channel(coordinator.target) as channel:
            names = await simfleet.truth(
                admin_pb2_grpc.AdminServiceStub(channel), coordinator.admin_key
            )
        peers = {p.public_key for p in full.peers} | {observer.public_key}
        status = fleet.wait_quiet(quiet=1.5, timeout=120)
        if set(status["versions"]) != {full.version}:
            result["version"] = f"{full.version} (nodes {dict(status['versions'])})"
            continue
        replies = fleet.call("verify", args=(full.version, names), timeout=600)
        result.update(
            bad=sum(r["bad"] for r in replies) + (0 if peers == set(names) else 1),
            sample=[s for r in replies for s in r["sample"]][:3],
            maps_checked=sum(r["maps_checked"] for r in replies),
            version=full.version,
            version_ok=True,
        )
        if peers != set(names):
            result["sample"].append("observer's full map differs from ListNodes")
        return result
    return result


if __name__ == "__main__":
    main()

"""Churn: 100 renames at once, and how many deltas each node gets for them.

    python -m bench.churn --nodes 1000

N nodes connect and sync; then 100 AdminService.RenameNode calls are issued
concurrently (all started within a few ms). Each node counts the deltas it
receives until the mesh is quiet again; coalescing should fold the renames
into very few. Correctness: every node ends on the version before + 100,
and every kept PeerMapCopy holds the new names (compared with ListNodes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time

from bench import flags, services, simfleet
from bench.report import emit, note, percentile
from runmesh.v1 import admin_pb2, admin_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    simfleet.add_fleet_arguments(parser, nodes=1000)
    parser.add_argument("--renames", type=flags.whole(1), default=100)
    args = parser.parse_args()
    with services.bench_run("churn", args.keep) as stack:
        run(args, stack)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    coordinator, fleet, created, approvals = simfleet.setup(args, stack)
    note("connecting streams ...")
    fleet.call("connect", args=(args.connect_concurrency, 1800), timeout=1900)
    before = fleet.wait_quiet(quiet=2.0, timeout=300)
    version_before = next(iter(before["versions"]))
    ids = [i for r in fleet.call("ids") for i in r["ids"]]
    chosen = random.sample(ids, min(args.renames, len(ids)))

    fleet.call("mark")
    issued, done, failures = asyncio.run(_rename(coordinator, [i for i, _ in chosen]))
    after = fleet.wait_quiet(quiet=2.0, timeout=120)
    counts = [c for r in fleet.call("delta_counts") for c in r["deltas"]]
    names = asyncio.run(simfleet.node_names(coordinator))
    expected = version_before + len(chosen) - failures
    replies = fleet.call("verify", args=(expected, names), timeout=600)
    bad = sum(r["bad"] for r in replies)
    renamed_ok = all(names.get(key, "").startswith("renamed-") for _, key in chosen)

    result = {
        "nodes": created,
        "max_deltas_per_node": max(counts),
        "p50_deltas_per_node": percentile(counts, 50),
        "renames": len(chosen) - failures,
        "renames_span_ms": (max(issued) - min(issued)) * 1000,
        "renames_done_ms": (max(done) - min(issued)) * 1000,
        "min_deltas_per_node": min(counts),
        "bad_maps": bad,
        "maps_checked": sum(r["maps_checked"] for r in replies),
        "delivered": bad == 0 and min(counts) >= 1 and renamed_ok and after["settled"],
        "version_before": version_before,
        "version_after": dict(after["versions"]),
        "loadavg": services.loadavg(),
        "cpus": coordinator.placement.as_json(),
    }
    rows = [
        ("nodes", created),
        ("renames issued / failed", f"{len(chosen)} / {failures}"),
        ("all renames issued within ms", result["renames_span_ms"]),
        ("last rename answered after ms", result["renames_done_ms"]),
        (
            "deltas per node p50 / max / min",
            f"{result['p50_deltas_per_node']} / {result['max_deltas_per_node']}"
            f" / {min(counts)}",
        ),
        ("version before / after", f"{version_before} / {dict(after['versions'])}"),
        (
            "nodes wrong (version, peers, names)",
            f"{bad} {[s for r in replies for s in r['sample']][:3]}",
        ),
        ("full PeerMapCopy maps checked", result["maps_checked"]),
        ("machine load average (2 cores)", result["loadavg"]),
        ("CPUs", coordinator.placement.describe()),
    ]
    emit(f"bench.churn --nodes {args.nodes}", rows, result)


async def _rename(
    coordinator: services.Coordinator, ids: list[str]
) -> tuple[list[float], list[float], int]:
    issued: list[float] = []
    done: list[float] = []
    failures = 0
    tag = random.randrange(10**6)
    async with simfleet.open_channel(coordinator.target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await services.connected(channel, f"the coordinator at {coordinator.target}")

        async def one(i: int, node_id: str) -> None:
            nonlocal failures
            issued.append(time.time())
            try:
                await admin.RenameNode(
                    admin_pb2.RenameNodeRequest(id=node_id, name=f"renamed-{tag}-{i}"),
                    metadata=simfleet.admin_metadata(coordinator.admin_key),
                    timeout=60,
                )
            except Exception as exc:  # noqa: BLE001 - counted and shown
                failures += 1
                note(f"rename failed: {exc}")
            done.append(time.time())

        await asyncio.gather(*(one(i, n) for i, n in enumerate(ids)))
    return issued, done, failures


if __name__ == "__main__":
    main()

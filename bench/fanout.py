"""Fan-out: how long the delta that adds one new node takes to reach N nodes.

    python -m bench.fanout --nodes 10000 --hold 60

Builds N nodes through the real link flow (concurrent StartLink ->
ApproveLink -> PollLink), opens their N Sync streams, waits until the mesh
is quiet, then approves one more node. Latency is per node, from
``time.time()`` taken just before ApproveLink is called to the moment the
node has parsed and applied the delta carrying the new peer (clocks are one
machine's). Then all streams are held ``--hold`` seconds with keepalives
only: CPU and RSS of the coordinator, and streams that ended. Last, the
floor: the same number of streams from the same client processes against a
bare grpc.aio server (bench.floor) pushing the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from bench import floor, simfleet
from bench.report import emit, note, percentile
from runmesh.v1 import admin_pb2, admin_pb2_grpc, mesh_pb2, mesh_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    simfleet.add_fleet_arguments(parser, nodes=1000)
    parser.add_argument(
        "--hold",
        type=float,
        default=None,
        help="seconds to hold all streams (default 60 at >= 10,000, else 15)",
    )
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()
    hold = (
        args.hold if args.hold is not None else (60.0 if args.nodes >= 10_000 else 15.0)
    )
    with simfleet.bench_run("fanout", args.keep) as stack:
        run(args, hold, stack)


def run(
    args: argparse.Namespace, hold: float, stack: simfleet.contextlib.ExitStack
) -> None:
    coordinator, fleet, created, approvals_per_s = simfleet.setup(args, stack)
    admin_key = coordinator.admin_key
    # The newcomer starts its link now; only its approval is timed.
    newcomer = asyncio.run(_start_link(coordinator.target))
    note("connecting streams ...")
    started = time.perf_counter()
    replies = fleet.call("connect", args=(args.connect_concurrency, 1800), timeout=1900)
    connect_s = time.perf_counter() - started
    ready = sum(r["ready"] for r in replies)
    note(f"{ready}/{created} streams ready in {connect_s:.1f}s; waiting for quiet ...")
    status = fleet.wait_quiet(quiet=2.0, timeout=300)
    note(f"quiet={status['settled']} versions={dict(status['versions'])}")

    fleet.call("mark")
    fleet.call("watch", args=(newcomer[1],))
    before, after = asyncio.run(_approve(coordinator.target, admin_key, newcomer[0]))
    replies = fleet.call("collect", args=(120.0,), timeout=200)
    times = [t for r in replies for t in r["times"]]
    missing = sum(r["missing"] for r in replies)
    sizes = sorted({b for r in replies for b in r["bytes"]})
    latencies = [(t - before) * 1000 for t in times]
    note(f"delta reached {len(times)}/{created} nodes; holding {hold:.0f}s ...")

    cpu0, wall0 = simfleet.cpu_seconds(coordinator.pid), time.monotonic()
    time.sleep(hold)
    cpu_idle = (
        (simfleet.cpu_seconds(coordinator.pid) - cpu0)
        / (time.monotonic() - wall0)
        * 100
    )
    rss, peak = simfleet.memory_mib(coordinator.pid)
    held = fleet.status()
    dropped = held["streams_ended"] + (held["nodes"] - held["up"])
    fleet.call("stop_streams", timeout=300)
    coordinator.kill(simfleet.signal.SIGTERM)

    floor_p99 = float("nan")
    floor_got = 0
    if not args.no_floor and sizes:
        floor_times = run_floor(fleet, args, created, stack, sizes[0])
        floor_got = len(floor_times[1])
        floor_p99 = percentile(
            [(t - floor_times[0]) * 1000 for t in floor_times[1]], 99
        )

    p99 = percentile(latencies, 99)
    result = {
        "nodes": created,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": p99,
        "max_ms": max(latencies, default=float("nan")),
        "floor_p99_ms": floor_p99,
        "ratio": p99 / floor_p99
        if floor_p99 == floor_p99 and floor_p99 > 0
        else float("nan"),
        "delta_bytes": sizes[0] if len(sizes) == 1 else sizes,
        "rss_mib": rss,
        "cpu_idle_pct": cpu_idle,
        "approvals_per_s": approvals_per_s,
        "dropped": dropped,
        "received": len(times),
        "missing": missing,
        "approve_rpc_ms": (after - before) * 1000,
        "connect_s": connect_s,
        "peak_rss_mib": peak,
        "floor_received": floor_got,
        "hold_s": hold,
        "loadavg": simfleet.loadavg(),
    }
    rows = [
        ("nodes (streams)", created),
        ("approvals/s while building", approvals_per_s),
        ("streams connected in s", connect_s),
        ("delta received by", f"{len(times)} nodes, {missing} missing"),
        ("delta bytes (CoordinatorMessage)", result["delta_bytes"]),
        ("ApproveLink RPC ms", result["approve_rpc_ms"]),
        ("latency from before ApproveLink p50 ms", result["p50_ms"]),
        ("  p99 ms", p99),
        ("  max ms", result["max_ms"]),
        ("floor (bare grpc.aio) p99 ms", floor_p99),
        ("ratio p99 / floor p99", result["ratio"]),
        (f"hold {hold:.0f}s: coordinator CPU % of a core", cpu_idle),
        ("coordinator RSS MiB (peak)", f"{rss:.0f} ({peak:.0f})"),
        ("streams dropped during hold", dropped),
        ("machine load average (2 cores)", result["loadavg"]),
    ]
    emit(f"bench.fanout --nodes {args.nodes}", rows, result)


async def _start_link(target: str) -> tuple[str, str]:
    """The newcomer's StartLink: (code, public key)."""
    key = simfleet._b64(bytes(simfleet.PrivateKey.generate().public_key))
    async with simfleet.open_channel(target) as channel:
        started = await mesh_pb2_grpc.MeshServiceStub(channel).StartLink(
            mesh_pb2.StartLinkRequest(
                public_key=key, device_label="newcomer", os="linux"
            ),
            timeout=60,
        )
    return started.code, key


async def _approve(target: str, admin_key: str, code: str) -> tuple[float, float]:
    """ApproveLink; time.time() just before the call and when it returned."""
    async with simfleet.open_channel(target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await channel.channel_ready()
        before = time.time()
        await admin.ApproveLink(
            admin_pb2.ApproveLinkRequest(code=code, name="newcomer"),
            metadata=simfleet.admin_metadata(admin_key),
            timeout=60,
        )
        return before, time.time()


def run_floor(
    fleet: simfleet.Fleet,
    args: argparse.Namespace,
    count: int,
    stack: simfleet.contextlib.ExitStack,
    size: int,
) -> tuple[float, list[float]]:
    port = simfleet.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port)],
        start_new_session=True,
    )
    stack.callback(_stop, proc)
    simfleet.wait_for_port(port, 30, proc)
    target = f"127.0.0.1:{port}"
    note(f"floor: opening {count} streams ...")
    opened = fleet.call(
        "floor_open",
        [(target, n, args.channels, 600.0) for n in fleet.split(count)],
        timeout=700,
    )
    note(f"floor: {sum(r['opened'] for r in opened)} open; firing")
    payload = bytes(size)
    before = asyncio.run(floor.fire(target, payload))
    replies = fleet.call(
        "floor_collect", [(n, 120.0) for n in fleet.split(count)], timeout=200
    )
    _stop(proc)
    return before, [t for r in replies for t in r["times"]]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()

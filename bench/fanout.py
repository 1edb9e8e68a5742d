"""Fan-out: how long the delta that adds one new node takes to reach N nodes.

    python -m bench.fanout --nodes 10000 --hold 60

Builds N nodes through the real link flow (concurrent StartLink ->
ApproveLink -> PollLink), opens their N Sync streams, waits until the mesh
is quiet, then approves one more node, ``--rounds`` times, each after a
calm (no delivery for longer than a burst's window), after one such join
that is not timed (the first approval of a freshly started coordinator
also compiles its statements, about 10 ms more). Latency is per node,
from ``time.time()`` taken just before ApproveLink is called to the moment
the node's ``read()`` returned the delta carrying the new peer (clocks are
one machine's); each node then parses and applies it. Then all streams are
held ``--hold`` seconds with keepalives only: CPU and RSS of the
coordinator, and streams that ended. Last, the floor: the same number of
streams from the same client processes against a bare grpc.aio server
(bench.floor) pushing the very bytes of the delta RunMesh sent, the same
number of rounds after one untimed, timed the same way; its clients parse
each message and look for the new peer in it, as the nodes do. The floor
is taken twice: with bidirectional streams whose server keeps a read
pending, the shape of Sync, which ``ratio`` compares with; and with server
streams, which grpc.aio writes more cheaply (``ratio_server_stream``). The
machine is noisy, so each figure is the median of its rounds (every round
is reported too), and a ratio is of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import statistics
import subprocess
import sys
import time

from bench import flags, floor, services, simfleet
from bench.report import emit, note, percentile
from coordinator.hub import BURST_WRITES_PER_SECOND, Coalescing
from runmesh.v1 import admin_pb2, admin_pb2_grpc, mesh_pb2, mesh_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    simfleet.add_fleet_arguments(parser, nodes=1000)
    parser.add_argument(
        "--hold",
        type=flags.seconds(0),
        default=None,
        help="seconds to hold all streams (default 60 at >= 10,000, else 15)",
    )
    parser.add_argument(
        "--rounds",
        type=flags.whole(1),
        default=7,
        help="joins timed (and floor rounds), each after a calm, after one "
        "that is not timed (default 7)",
    )
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()
    hold = (
        args.hold if args.hold is not None else (60.0 if args.nodes >= 10_000 else 15.0)
    )
    with services.bench_run("fanout", args.keep) as stack:
        run(args, hold, stack)


def run(args: argparse.Namespace, hold: float, stack: contextlib.ExitStack) -> None:
    coordinator, fleet, created, approvals_per_s = simfleet.setup(args, stack)
    note("connecting streams ...")
    started = time.perf_counter()
    replies = fleet.call("connect", args=(args.connect_concurrency, 1800), timeout=1900)
    connect_s = time.perf_counter() - started
    ready = sum(r["ready"] for r in replies)
    note(f"{ready}/{created} streams ready in {connect_s:.1f}s; waiting for quiet ...")
    status = fleet.wait_quiet(quiet=2.0, timeout=300)
    note(f"quiet={status['settled']} versions={dict(status['versions'])}")

    fleet.call("mark")
    # Round 0 warms the coordinator up and is not counted.
    joins = [_join(coordinator, fleet, created, n) for n in range(args.rounds + 1)]
    joins = joins[1:]
    note(
        "rounds p99 ms: "
        + " ".join(f"{percentile(j.latencies_ms, 99):.0f}" for j in joins)
    )
    note(f"holding {hold:.0f}s ...")

    cpu0, wall0 = services.cpu_seconds(coordinator.pid), time.monotonic()
    time.sleep(hold)
    cpu_idle = (
        (services.cpu_seconds(coordinator.pid) - cpu0)
        / (time.monotonic() - wall0)
        * 100
    )
    rss, peak = services.memory_mib(coordinator.pid)
    held = fleet.status()
    dropped = held["streams_ended"] + (held["nodes"] - held["up"])
    fleet.call("stop_streams", timeout=300)
    coordinator.kill(signal.SIGTERM)

    sizes = sorted({b for j in joins for b in j.sizes})
    floors: dict[str, list[list[float]]] = {shape: [] for shape in floor.SHAPES}
    if not args.no_floor and joins[-1].raw:
        for shape in floor.SHAPES:
            floors[shape] = run_floor(fleet, args, created, stack, joins[-1], shape)

    rounds_p99 = [percentile(j.latencies_ms, 99) for j in joins]
    p99 = statistics.median(rounds_p99)
    floor_p99s = [percentile(r, 99) for r in floors["bidi"]]
    floor_p99 = _median(floor_p99s)
    server_stream_p99s = [percentile(r, 99) for r in floors["server-stream"]]
    server_stream_p99 = _median(server_stream_p99s)
    received = min(len(j.latencies_ms) for j in joins)
    missing = max(j.missing for j in joins)
    result = {
        "nodes": created,
        "p50_ms": statistics.median(percentile(j.latencies_ms, 50) for j in joins),
        "p99_ms": p99,
        "max_ms": max(max(j.latencies_ms, default=float("nan")) for j in joins),
        "floor_p99_ms": floor_p99,
        "ratio": _ratio(p99, floor_p99),
        "delta_bytes": sizes[0] if len(sizes) == 1 else sizes,
        "rss_mib": rss,
        "cpu_idle_pct": cpu_idle,
        "approvals_per_s": approvals_per_s,
        "dropped": dropped,
        "received": received,
        "missing": missing,
        "approve_rpc_ms": statistics.median(j.approve_ms for j in joins),
        "rounds": len(joins),
        "rounds_p99_ms": rounds_p99,
        "floor_rounds_p99_ms": floor_p99s,
        "floor_server_stream_p99_ms": server_stream_p99,
        "ratio_server_stream": _ratio(p99, server_stream_p99),
        "floor_server_stream_rounds_p99_ms": server_stream_p99s,
        "connect_s": connect_s,
        "peak_rss_mib": peak,
        "floor_received": min(
            (len(r) for rounds in floors.values() for r in rounds), default=0
        ),
        "hold_s": hold,
        "loadavg": services.loadavg(),
    }
    rows = [
        ("nodes (streams)", created),
        ("approvals/s while building", approvals_per_s),
        ("streams connected in s", connect_s),
        ("delta received by (worst round)", f"{received} nodes, {missing} missing"),
        ("delta bytes (CoordinatorMessage)", result["delta_bytes"]),
        ("ApproveLink RPC ms (median)", result["approve_rpc_ms"]),
        ("latency from before ApproveLink p50 ms", result["p50_ms"]),
        ("  p99 ms (median of rounds)", p99),
        ("  p99 ms of each round", " ".join(f"{v:.0f}" for v in rounds_p99)),
        ("  max ms (all rounds)", result["max_ms"]),
        ("floor (bare grpc.aio, bidi as Sync) p99 ms", floor_p99),
        ("  p99 ms of each round", " ".join(f"{v:.0f}" for v in floor_p99s)),
        ("ratio p99 / floor p99", result["ratio"]),
        ("floor with server streams p99 ms", server_stream_p99),
        ("  p99 ms of each round", " ".join(f"{v:.0f}" for v in server_stream_p99s)),
        ("ratio p99 / server-stream floor p99", result["ratio_server_stream"]),
        (f"hold {hold:.0f}s: coordinator CPU % of a core", cpu_idle),
        ("coordinator RSS MiB (peak)", f"{rss:.0f} ({peak:.0f})"),
        ("streams dropped during hold", dropped),
        ("machine load average (2 cores)", result["loadavg"]),
    ]
    emit(f"bench.fanout --nodes {args.nodes}", rows, result)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratio(p99: float, floor_p99: float) -> float:
    return p99 / floor_p99 if floor_p99 == floor_p99 and floor_p99 > 0 else float("nan")


@dataclasses.dataclass
class Join:
    """One round: a newcomer approved, its delta timed at every node."""

    latencies_ms: list[float]
    missing: int
    sizes: list[int]
    approve_ms: float
    key: str
    raw: bytes


def calm_seconds(nodes: int) -> float:
    """Long enough after a delivery that the next change is not part of a
    burst (see hub.Coalescing): a join after a calm is what is timed."""
    return Coalescing().burst_window + nodes / BURST_WRITES_PER_SECOND + 0.5


def _join(
    coordinator: services.Coordinator, fleet: simfleet.Fleet, nodes: int, n: int
) -> Join:
    # The newcomer starts its link first; only its approval is timed.
    code, key = asyncio.run(_start_link(coordinator.target))
    fleet.call("watch", args=(key,))
    time.sleep(calm_seconds(nodes))
    before, after = asyncio.run(
        _approve(coordinator.target, coordinator.admin_key, code, f"newcomer-{n}")
    )
    replies = fleet.call("collect", args=(120.0,), timeout=200)
    return Join(
        latencies_ms=[(t - before) * 1000 for r in replies for t in r["times"]],
        missing=sum(r["missing"] for r in replies),
        sizes=sorted({b for r in replies for b in r["bytes"]}),
        approve_ms=(after - before) * 1000,
        key=key,
        raw=next((r["raw"] for r in replies if r["raw"]), b""),
    )


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


async def _approve(
    target: str, admin_key: str, code: str, name: str
) -> tuple[float, float]:
    """ApproveLink; time.time() just before the call and when it returned."""
    async with simfleet.open_channel(target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await channel.channel_ready()
        before = time.time()
        await admin.ApproveLink(
            admin_pb2.ApproveLinkRequest(code=code, name=name),
            metadata=simfleet.admin_metadata(admin_key),
            timeout=60,
        )
        return before, time.time()


def run_floor(
    fleet: simfleet.Fleet,
    args: argparse.Namespace,
    count: int,
    stack: contextlib.ExitStack,
    join: Join,
    shape: str,
) -> list[list[float]]:
    """Each round's latencies (ms) on the bare server with streams of
    ``shape``, rounds as RunMesh's, pushing the bytes of the delta RunMesh
    sent in ``join``."""
    port = services.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port)],
        start_new_session=True,
    )
    stack.callback(_stop, proc)
    services.wait_for_port(port, 30, proc)
    target = f"127.0.0.1:{port}"
    note(f"floor ({shape}): opening {count} streams ...")
    opened = fleet.call(
        "floor_open",
        [
            (target, n, args.channels, 600.0, join.key, shape)
            for n in fleet.split(count)
        ],
        timeout=700,
    )
    note(f"floor ({shape}): {sum(r['opened'] for r in opened)} open; firing")
    payload = join.raw
    rounds = []
    for n in range(args.rounds + 1):
        time.sleep(calm_seconds(count))
        before = asyncio.run(floor.fire(target, payload))
        replies = fleet.call(
            "floor_collect", [(k, n, 120.0) for k in fleet.split(count)], timeout=200
        )
        rounds.append([(t - before) * 1000 for r in replies for t in r["times"]])
    fleet.call("floor_close", timeout=200)
    _stop(proc)
    return rounds[1:]  # as for RunMesh, the first round is not counted


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()

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
one machine's); each node then parses and applies it. The floor rounds
are taken in turn with RunMesh's: before the rounds, the same number of
streams are opened from the same client processes (next to the nodes'
own streams, which stay open) to a bare grpc.aio server (bench.floor),
twice over: bidirectional streams whose server keeps a read pending, the
shape of Sync, which ``ratio`` compares with, and server streams
(``ratio_server_stream``). Each RunMesh round is followed by one round of
each floor pushing the very bytes of the delta RunMesh just sent, after
the same calm, timed the same way; the floor's clients parse each message
and look for the new peer in it, as the nodes do. Taking them in turn
puts both under the same minutes of a noisy machine and the same client
processes (holding the same maps). After the rounds every node's version
and kept map are checked against the coordinator's; then the floors close and
all of RunMesh's streams are held ``--hold`` seconds with keepalives only:
CPU and RSS of the coordinator, and streams that ended. Each figure is
the median of its rounds (every round is reported too), and a ratio is of
the medians.
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

from bench import flags, floor, placement, services, simfleet
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
    version_before = max(status["versions"], default=0)

    floors = (
        []
        if args.no_floor
        else [
            open_floor(fleet, args, created, stack, shape, coordinator.placement)
            for shape in floor.SHAPES
        ]
    )
    fleet.call("mark")
    # RunMesh's round and then each floor's, in turn, so that all are taken
    # in the same minutes of a noisy machine. Round 0 warms everything up
    # (the first approval of a coordinator also compiles its statements)
    # and is not counted.
    joins = []
    for n in range(args.rounds + 1):
        services.check_interrupted()
        join = _join(coordinator, fleet, created, n)
        joins.append(join)
        round_p99 = percentile(join.latencies_ms, 99)
        figures = [f"RunMesh {round_p99:.0f} ({join.cpu_ms:.0f} ms CPU)"]
        for one in floors:
            taken = one.round(fleet, created, join)
            if taken is not None:
                figures.append(
                    f"floor {one.shape} {percentile(taken, 99):.0f}"
                    f" ({one.cpu_ms[-1]:.0f} ms CPU)"
                )
        counted = "" if n else " (not counted)"
        note(f"round {n}{counted}: p99 ms " + ", ".join(figures))
    # Every node must end on the version after the last join (each join is
    # one change) with the coordinator's peers and names in its map.
    fleet.wait_quiet(quiet=1.0, timeout=120)
    expected = version_before + len(joins)
    names = asyncio.run(simfleet.node_names(coordinator))
    checked = fleet.call("verify", args=(expected, names), timeout=600)
    bad_maps = sum(r["bad"] for r in checked)
    note(f"maps after the rounds: {bad_maps} wrong; e.g. {checked[0]['sample']}")
    joins = joins[1:]
    fleet.call("floor_close", timeout=200)
    for one in floors:
        one.stop()
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
    floor_rounds = {one.shape: one.rounds[1:] for one in floors}
    floors_of = {shape: floor_rounds.get(shape, []) for shape in floor.SHAPES}
    floor_cpu = {one.shape: one.cpu_ms[1:] for one in floors}
    cpu_of = {shape: _median(floor_cpu.get(shape, [])) for shape in floor.SHAPES}
    rounds_p99 = [percentile(j.latencies_ms, 99) for j in joins]
    p99 = statistics.median(rounds_p99)
    floor_p99s = [percentile(r, 99) for r in floors_of["bidi"]]
    floor_p99 = _median(floor_p99s)
    server_stream_p99s = [percentile(r, 99) for r in floors_of["server-stream"]]
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
        "bad_maps": bad_maps,
        "maps_checked": sum(r["maps_checked"] for r in checked),
        "approve_rpc_ms": statistics.median(j.approve_ms for j in joins),
        "rounds": len(joins),
        "rounds_p99_ms": rounds_p99,
        "floor_rounds_p99_ms": floor_p99s,
        "floor_server_stream_p99_ms": server_stream_p99,
        "ratio_server_stream": _ratio(p99, server_stream_p99),
        "floor_server_stream_rounds_p99_ms": server_stream_p99s,
        "connect_s": connect_s,
        "peak_rss_mib": peak,
        "cpu_ms_per_round": statistics.median(j.cpu_ms for j in joins),
        "floor_cpu_ms_per_round": cpu_of["bidi"],
        "floor_server_stream_cpu_ms_per_round": cpu_of["server-stream"],
        "rounds_cpu_ms": [j.cpu_ms for j in joins],
        # None, not 0, when no floor was taken (--no-floor).
        "floor_received": min(
            (len(r) for rounds in floors_of.values() for r in rounds), default=None
        ),
        "hold_s": hold,
        "loadavg": services.loadavg(),
        "cpus": coordinator.placement.as_json(),
    }
    rows = [
        ("nodes (streams)", created),
        ("approvals/s while building", approvals_per_s),
        ("streams connected in s", connect_s),
        ("delta received by (worst round)", f"{received} nodes, {missing} missing"),
        (
            "maps wrong after the rounds (of those checked)",
            f"{bad_maps} ({result['maps_checked']})",
        ),
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
        (
            "CPU ms per round: RunMesh / floor / server-stream",
            " / ".join(
                f"{result[k]:.0f}"
                for k in (
                    "cpu_ms_per_round",
                    "floor_cpu_ms_per_round",
                    "floor_server_stream_cpu_ms_per_round",
                )
            ),
        ),
        (f"hold {hold:.0f}s: coordinator CPU % of a core", cpu_idle),
        ("coordinator RSS MiB (peak)", f"{rss:.0f} ({peak:.0f})"),
        ("streams dropped during hold", dropped),
        ("machine load average (2 cores)", result["loadavg"]),
        ("CPUs", coordinator.placement.describe()),
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
    # The coordinator's CPU (every thread) from just before ApproveLink to
    # the last node's receipt, and a little polling after.
    cpu_ms: float


def calm_seconds(nodes: int) -> float:
    """Long enough after a delivery that the next change is not part of a
    burst (see hub.Coalescing): a join after a calm is what is timed."""
    return Coalescing().burst_window + nodes / BURST_WRITES_PER_SECOND + 0.5


def _join(
    coordinator: services.Coordinator, fleet: simfleet.Fleet, nodes: int, n: int
) -> Join:
    # The newcomer starts its link first; only its approval is timed.
    with coordinator.answering():
        code, key = asyncio.run(_start_link(coordinator.target))
    fleet.call("watch", args=(key,))
    time.sleep(calm_seconds(nodes))
    with coordinator.answering():
        coordinator.check_running()
        cpu_before = services.cpu_ms_exact(coordinator.pid)
        before, after = asyncio.run(
            _approve(coordinator.target, coordinator.admin_key, code, f"newcomer-{n}")
        )
        replies = fleet.call("collect", args=(120.0,), timeout=200)
        # A coordinator that died during the round has no CPU to read: the
        # round fails, rather than report a figure of the dead process's.
        coordinator.check_running()
        cpu_ms = services.cpu_ms_exact(coordinator.pid) - cpu_before
    return Join(
        latencies_ms=[(t - before) * 1000 for r in replies for t in r["times"]],
        missing=sum(r["missing"] for r in replies),
        sizes=sorted({b for r in replies for b in r["bytes"]}),
        approve_ms=(after - before) * 1000,
        key=key,
        raw=next((r["raw"] for r in replies if r["raw"]), b""),
        cpu_ms=cpu_ms,
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
        await services.connected(channel, f"the coordinator at {target}")
        before = time.time()
        await admin.ApproveLink(
            admin_pb2.ApproveLinkRequest(code=code, name=name),
            metadata=simfleet.admin_metadata(admin_key),
            timeout=60,
        )
        return before, time.time()


@dataclasses.dataclass
class Floor:
    """One bare grpc.aio server (bench.floor) and its streams in the fleet."""

    shape: str
    target: str
    proc: subprocess.Popen[bytes]
    # Each fired round's latencies (ms), the untimed first one included,
    # and the floor's CPU in each (timed as Join.cpu_ms is).
    rounds: list[list[float]] = dataclasses.field(default_factory=list)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)

    def round(
        self, fleet: simfleet.Fleet, count: int, join: Join
    ) -> list[float] | None:
        """Push the bytes of the delta RunMesh sent in ``join`` to every
        stream, after the same calm, timed as RunMesh's round is; the
        round's latencies (ms), or None if no node got that delta."""
        if not join.raw:
            return None
        self.check_running()
        fleet.call("settle")
        time.sleep(calm_seconds(count))
        cpu_before = services.cpu_ms_exact(self.proc.pid)
        before = asyncio.run(floor.fire(self.target, join.raw))
        index = len(self.rounds)
        replies = fleet.call(
            "floor_collect",
            [(self.shape, k, index, 120.0) for k in fleet.split(count)],
            timeout=200,
        )
        self.check_running()  # a dead floor has no CPU to read
        self.cpu_ms.append(services.cpu_ms_exact(self.proc.pid) - cpu_before)
        taken = [(t - before) * 1000 for r in replies for t in r["times"]]
        self.rounds.append(taken)
        return taken

    def check_running(self) -> None:
        if (code := self.proc.poll()) is not None:
            raise RuntimeError(f"the floor server ({self.shape}) exited (code {code})")

    def stop(self) -> None:
        _stop(self.proc)


def open_floor(
    fleet: simfleet.Fleet,
    args: argparse.Namespace,
    count: int,
    stack: contextlib.ExitStack,
    shape: str,
    where: placement.Placement,
) -> Floor:
    """A floor server with ``count`` open streams of ``shape``, held by the
    fleet's workers next to the nodes' streams; it runs on the CPUs the
    coordinator runs on."""
    port = services.free_port()
    with placement.starting_on(where.servers):
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
        [(shape, target, n, args.channels, 600.0) for n in fleet.split(count)],
        timeout=700,
    )
    note(f"floor ({shape}): {sum(r['opened'] for r in opened)} open")
    return Floor(shape, target, proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()

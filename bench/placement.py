"""Which CPUs a benchmark's processes run on.

A benchmark runs the servers it measures (the coordinator, the gateway,
the floors) and the simulated nodes that drive them on one machine. In
production a coordinator does not share its CPUs with a thousand nodes,
so by default the servers get one half of the CPUs this process may use
and the nodes' worker processes the other half; with fewer than two CPUs,
or ``--shared-cpus``, every process may run on any of them.

Why (measured on a 2-core machine, see docs/performance.md): sharing both
cores with the nodes' three busy client processes, the coordinator's event
loop spent about 30 ms of each 1,000-node fan-out runnable but waiting for
a CPU (the run-queue time in ``/proc/<tid>/schedstat``), out of about
85 ms; on a CPU of its own, about 6 ms. The floors are started the same
way as the coordinator, so a ratio compares like with like.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    servers: frozenset[int]
    nodes: frozenset[int]

    @property
    def shared(self) -> bool:
        return self.servers == self.nodes

    def describe(self) -> str:
        if self.shared:
            return f"shared: every process on {_cpus(self.servers)}"
        return f"servers on {_cpus(self.servers)}, nodes on {_cpus(self.nodes)}"

    def as_json(self) -> dict[str, list[int]]:
        return {"servers": sorted(self.servers), "nodes": sorted(self.nodes)}


def choose(shared: bool, available: set[int] | None = None) -> Placement:
    """Half of ``available`` (this process's CPUs) for the servers, the
    rest for the nodes; every process on all of them if ``shared`` or
    there is only one."""
    cpus = sorted(os.sched_getaffinity(0) if available is None else available)
    if shared or len(cpus) < 2:
        every = frozenset(cpus)
        return Placement(every, every)
    half = len(cpus) // 2
    return Placement(frozenset(cpus[:half]), frozenset(cpus[half:]))


@contextlib.contextmanager
def starting_on(cpus: frozenset[int]) -> Iterator[None]:
    """Processes started inside the block run on ``cpus``, with every
    thread they make: a child inherits the CPU mask of the thread that
    started it, so the calling thread's mask is set for the block."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpus(cpus: frozenset[int]) -> str:
    return "CPU " + ",".join(str(c) for c in sorted(cpus))

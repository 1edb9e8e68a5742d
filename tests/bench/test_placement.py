"""Where a benchmark's processes run: the split of the CPUs, and that a
process started on some CPUs really runs there (with its threads)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# tests/bench is itself a package called "bench": load the module by path.
_spec = importlib.util.spec_from_file_location(
    "bench_placement", Path(__file__).resolve().parents[2] / "bench" / "placement.py"
)
assert _spec is not None and _spec.loader is not None
placement = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = placement  # dataclasses look their module up there
_spec.loader.exec_module(placement)

# The CPUs of a child process and of a thread it starts.
REPORT = (
    "import os, threading\n"
    "seen = []\n"
    "mask = lambda: sorted(os.sched_getaffinity(0))\n"
    "t = threading.Thread(target=lambda: seen.append(mask()))\n"
    "t.start(); t.join()\n"
    "print(mask(), seen[0])\n"
)


def test_the_servers_get_one_half_of_the_cpus_and_the_nodes_the_other() -> None:
    two = placement.choose(False, {0, 1})
    assert two.servers == {0} and two.nodes == {1}
    five = placement.choose(False, {3, 0, 7, 1, 4})
    assert five.servers == {0, 1} and five.nodes == {3, 4, 7}
    assert five.as_json() == {"servers": [0, 1], "nodes": [3, 4, 7]}
    assert five.describe() == "servers on CPU 0,1, nodes on CPU 3,4,7"


def test_one_cpu_or_shared_cpus_put_every_process_on_all_of_them() -> None:
    # Regression: under `taskset -c 0` the run was reported as "on any CPU".
    one = placement.choose(False, {2})
    assert one.shared and one.servers == one.nodes == {2}
    assert one.as_json() == {"servers": [2], "nodes": [2]}
    assert one.describe() == "shared: every process on CPU 2"
    both = placement.choose(True, {0, 1})
    assert both.shared and both.servers == both.nodes == {0, 1}
    assert both.describe() == "shared: every process on CPU 0,1"
    assert not placement.choose(False, {0, 1}).shared


def test_a_process_started_on_some_cpus_runs_there_with_its_threads() -> None:
    mine = os.sched_getaffinity(0)
    first = frozenset({min(mine)})
    with placement.starting_on(first):
        child = subprocess.run(
            [sys.executable, "-c", REPORT], capture_output=True, text=True, check=True
        )
    assert child.stdout.split("] ") == [f"[{min(mine)}", f"[{min(mine)}]\n"]
    assert os.sched_getaffinity(0) == mine  # the caller's own mask is back


def test_no_restriction_leaves_the_mask_alone() -> None:
    mine = os.sched_getaffinity(0)
    with placement.starting_on(frozenset()):
        assert os.sched_getaffinity(0) == mine
    assert os.sched_getaffinity(0) == mine

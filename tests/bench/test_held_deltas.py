"""The fleet's nodes hold a timed round's delta and apply it afterwards;
outside a timed round they apply what they read at once.

Regression: after a round whose collection ended before the delta came (a
round that timed out), a node that then got the delta held it until its
next message, which never came: it stayed a version behind while the
fleet reported itself quiet and agreed.

The scenario runs as a subprocess from the repository root, where
``bench`` is the benchmarks' package (here it is this test folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
import argparse, asyncio, contextlib, json, sys, tempfile
from pathlib import Path
from bench import fanout, simfleet

args = argparse.Namespace(
    nodes=12, workers=2, channels=2, verify=None, create_concurrency=8,
    keepalive=25.0, shared_cpus=False, from_fleet=None, save_fleet=None,
)
with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
    stack.workdir = Path(work)
    coordinator, fleet, created, _ = simfleet.setup(args, stack)
    fleet.call("connect", args=(64, 120.0), timeout=200)
    version = max(fleet.wait_quiet(quiet=1.0, timeout=60)["versions"])
    code, key = asyncio.run(fanout._start_link(coordinator.target))
    fleet.call("watch", args=(key,))
    # The round ends before the approval: nobody gets the delta in time.
    missed = fleet.call("collect", args=(0.2,), timeout=60)
    asyncio.run(
        fanout._approve(coordinator.target, coordinator.admin_key, code, "late")
    )
    after = fleet.wait_quiet(quiet=1.0, timeout=60)
    names = asyncio.run(simfleet.node_names(coordinator))
    checked = fleet.call("verify", args=(version + 1, names), timeout=120)
print(json.dumps({
    "created": created,
    "missed": sum(r["missing"] for r in missed),
    "versions": {str(v - version): n for v, n in after["versions"].items()},
    "bad": sum(r["bad"] for r in checked),
    "checked": sum(r["maps_checked"] for r in checked),
}))
"""


def test_a_delta_that_comes_after_the_round_is_collected_is_applied() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["created"] == seen["missed"] == 12
    # Every node one version on from where it was: the late delta applied.
    assert seen["versions"] == {"1": 12}
    assert seen["bad"] == 0 and seen["checked"] == 12

"""Seed real state for scripts/fuzz through the REST API.

Usage: seed.py BASE_URL API_KEY NODES PENDING

Links and approves NODES devices and starts PENDING more links left pending,
then prints two shell assignments for scripts/fuzz to eval:
RUNMESH_FUZZ_NODE_IDS (comma-separated node ids) and RUNMESH_FUZZ_LINKS
(comma-separated CODE:PUBLICKEY of the pending links).
"""

from __future__ import annotations

import base64
import os
import shlex
import sys

import httpx


def main() -> int:
    base, key = sys.argv[1], sys.argv[2]
    nodes, pending = int(sys.argv[3]), int(sys.argv[4])
    labels = ["Greg's MacBook", "build-host", "sandbox vm 3", "Ünïcode Laptop", "ci"]
    node_ids: list[str] = []
    links: list[str] = []
    with httpx.Client(base_url=base, timeout=15) as client:
        for n in range(nodes + pending):
            public_key = base64.b64encode(os.urandom(32)).decode()
            started = client.post(
                "/devices/link/start",
                json={
                    "publicKey": public_key,
                    "deviceLabel": labels[n % len(labels)],
                    "os": ["macos", "linux", "linux", "windows", "linux"][n % 5],
                    "hostname": f"host-{n}",
                },
            )
            started.raise_for_status()
            code = started.json()["data"]["code"]
            if n >= nodes:
                links.append(f"{code}:{public_key}")
                continue
            approved = client.post(
                "/devices/link/approve",
                headers={"X-API-Key": key},
                json={"code": code, "name": f"seed-{n}"},
            )
            approved.raise_for_status()
            node_ids.append(approved.json()["data"]["id"])
    print(f"RUNMESH_FUZZ_NODE_IDS={shlex.quote(','.join(node_ids))}")
    print(f"RUNMESH_FUZZ_LINKS={shlex.quote(','.join(links))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

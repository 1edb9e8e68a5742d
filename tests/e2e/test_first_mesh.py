"""Three devices link, are approved over REST and ping each other over WireGuard.

Everything is real: the coordinator and gateway processes, `meshd link` and
`meshd up` inside network namespaces, wireguard-go, the kernel's routing.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from support.netlab import Host, Lab
from support.processes import BIN, Coordinator, Service, create_key, gateway_client

from runmesh.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.e2e

MESHD = str(BIN / "meshd")


def eventually(
    check: Callable[[], bool], timeout: float, what: str, step: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s: {what}")


def link(
    lab: Lab, host: Host, coordinator: Coordinator, tmp_path: Path
) -> subprocess.Popen[bytes]:
    log = tmp_path / f"{host.netns}-link.log"
    proc = lab.spawn(
        host,
        [
            MESHD,
            "link",
            "--coordinator",
            coordinator.target,
            "--state-dir",
            str(host.state_dir),
            "--label",
            f"Lab host {host.underlay}",
        ],
        log,
    )
    eventually(lambda: "code:" in log.read_text(), 20, f"{host.netns} printed a code")
    return proc


def code_of(log: Path) -> str:
    match = re.search(r"^code: ([A-Z0-9]{6})$", log.read_text(), re.MULTILINE)
    assert match, log.read_text()
    return match.group(1)


def test_three_devices_link_ping_and_a_revoked_one_is_cut_off(
    lab: Lab, lab_coordinator: Coordinator, lab_gateway: Service, tmp_path: Path
) -> None:
    key = create_key(lab_coordinator.db_url)
    api = gateway_client(lab_gateway, key)

    # Link: each device prints a code, a member approves it over REST.
    nodes = {}
    for host in lab.hosts:
        proc = link(lab, host, lab_coordinator, tmp_path)
        code = code_of(tmp_path / f"{host.netns}-link.log")
        approved = api.post("/devices/link/approve", json={"code": code})
        assert approved.status_code == 200, approved.text
        nodes[host.netns] = approved.json()["data"]
        assert proc.wait(30) == 0, (tmp_path / f"{host.netns}-link.log").read_text()

    listed = api.get("/nodes").json()["data"]
    assert {n["id"] for n in listed} == {n["id"] for n in nodes.values()}

    # Up: each meshd starts its wireguard-go and programs it from the stream.
    for host in lab.hosts:
        lab.spawn(
            host,
            [
                MESHD,
                "up",
                "--state-dir",
                str(host.state_dir),
                "--interface",
                host.interface,
                "--reconcile-interval",
                "2",
                "--keepalive",
                "2",
                "--wireguard-log",
                str(tmp_path / f"{host.netns}-wireguard-go.log"),
            ],
            tmp_path / f"{host.netns}-up.log",
        )

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}"
            for p in sorted(tmp_path.glob("*.log"))
        )

    # Every node reaches every other over both mesh addresses.
    for host in lab.hosts:
        for other in lab.hosts:
            if other is host:
                continue
            peer = nodes[other.netns]
            for address in (peer["ipv4"], peer["ipv6"]):
                try:
                    eventually(
                        lambda h=host, a=address: h.ping(a),
                        20,
                        f"{host.netns} pings {address}",
                    )
                except AssertionError:
                    pytest.fail(f"{host.netns} cannot ping {address}\n{logs()}")

    # wg show lists exactly the other nodes, each with a recent handshake.
    now = time.time()
    for host in lab.hosts:
        peers = host.wg_peers()
        expected = {nodes[o.netns]["publicKey"] for o in lab.hosts if o is not host}
        assert set(peers) == expected
        for fields in peers.values():
            assert now - int(fields["latest_handshake"]) < 60

    # Revoke one node: within 2 s it is gone from the others and cut off.
    victim, survivors = lab.hosts[0], lab.hosts[1:]
    victim_node = nodes[victim.netns]
    with grpc.insecure_channel(lab_coordinator.target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        admin.RevokeNode(
            admin_pb2.RevokeNodeRequest(id=victim_node["id"]),
            metadata=[("authorization", f"Bearer {key}")],
            timeout=10,
        )
    revoked_at = time.monotonic()
    eventually(
        lambda: all(victim_node["publicKey"] not in h.wg_peers() for h in survivors),
        2.0,
        "the revoked node left every peer's wg show",
        step=0.05,
    )
    assert time.monotonic() - revoked_at <= 2.0
    for other in survivors:
        assert not victim.ping(nodes[other.netns]["ipv4"], wait=1)
        assert not other.ping(victim_node["ipv4"], wait=1)
    # The survivors still reach each other.
    assert survivors[0].ping(nodes[survivors[1].netns]["ipv4"])

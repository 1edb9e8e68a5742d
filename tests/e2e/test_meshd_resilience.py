"""meshd on a bad day: the coordinator dies, hands edit the device, the
underlay moves, the key rotates, wireguard-go is killed, the node is revoked.

Three real nodes in namespaces (coordinator, gateway, `meshd up`,
wireguard-go), as in test_first_mesh. Each test links its own mesh.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.netlab import Host, Lab
from support.processes import (
    BIN,
    Coordinator,
    Service,
    create_key,
    gateway_client,
    start_coordinator,
)
from test_first_mesh import code_of, eventually, link

from runmesh.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.e2e

MESHD = str(BIN / "meshd")
RECONCILE_INTERVAL = 2


@dataclass
class Mesh:
    lab: Lab
    coordinator: Coordinator
    api_key: str
    tmp_path: Path
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def node(self, host: Host) -> dict[str, Any]:
        return self.nodes[host.netns]

    def up(self, host: Host, *extra: str) -> subprocess.Popen[bytes]:
        argv = [
            MESHD,
            "up",
            "--state-dir",
            str(host.state_dir),
            "--interface",
            host.interface,
            "--reconcile-interval",
            str(RECONCILE_INTERVAL),
            "--keepalive",
            "2",
            "--wireguard-log",
            str(self.tmp_path / f"{host.netns}-wireguard-go.log"),
            *extra,
        ]
        proc = self.lab.spawn(host, argv, self.tmp_path / f"{host.netns}-up.log")
        self.daemons[host.netns] = proc
        return proc

    def status(self, host: Host) -> dict[str, Any]:
        try:
            return dict(json.loads((host.state_dir / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def pings(self, host: Host, other: Host, wait: int = 2) -> bool:
        return host.ping(self.node(other)["ipv4"], wait=wait)

    def all_ping(self) -> None:
        for host in self.lab.hosts:
            for other in self.lab.hosts:
                if other is not host:
                    eventually(
                        lambda h=host, o=other: self.pings(h, o),
                        20,
                        f"{host.netns} pings {other.netns}\n{self.logs()}",
                    )

    def revoke(self, host: Host) -> None:
        with grpc.insecure_channel(self.coordinator.target) as channel:
            admin_pb2_grpc.AdminServiceStub(channel).RevokeNode(
                admin_pb2.RevokeNodeRequest(id=self.node(host)["id"]),
                metadata=[("authorization", f"Bearer {self.api_key}")],
                timeout=10,
            )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.tmp_path.glob("*.log"))
        )


@pytest.fixture
def mesh(
    lab: Lab, lab_coordinator: Coordinator, lab_gateway: Service, tmp_path: Path
) -> Iterator[Mesh]:
    key = create_key(lab_coordinator.db_url)
    mesh = Mesh(lab, lab_coordinator, key, tmp_path)
    api = gateway_client(lab_gateway, key)

    links = {
        host.netns: link(lab, host, lab_coordinator, tmp_path) for host in lab.hosts
    }
    for host in lab.hosts:
        code = code_of(tmp_path / f"{host.netns}-link.log")
        approved = api.post("/devices/link/approve", json={"code": code})
        assert approved.status_code == 200, approved.text
        mesh.nodes[host.netns] = approved.json()["data"]
    for netns, proc in links.items():
        assert proc.wait(30) == 0, (tmp_path / f"{netns}-link.log").read_text()

    # The last node turns WireGuard keepalives off: 0 must mean off.
    for host in lab.hosts[:-1]:
        mesh.up(host)
    mesh.up(lab.hosts[-1], "--persistent-keepalive", "0")
    mesh.all_ping()
    yield mesh


def wait_connected(mesh: Mesh, host: Host, after: str = "") -> dict[str, Any]:
    def connected() -> bool:
        status = mesh.status(host)
        return (
            status.get("state") == "connected"
            and (status.get("last_connected_at") or "") > after
        )

    eventually(connected, 30, f"{host.netns} connected\n{mesh.logs()}")
    return mesh.status(host)


def test_pings_outlive_a_killed_coordinator_and_nodes_resume_unchanged(
    mesh: Mesh, tmp_path: Path
) -> None:
    hosts = mesh.lab.hosts
    before = {h.netns: wait_connected(mesh, h) for h in hosts}

    mesh.coordinator.proc.send_signal(signal.SIGKILL)
    mesh.coordinator.proc.wait(10)
    # Every node pings every other once a second for 30 s: all must succeed.
    failures = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = time.monotonic()
        for host in hosts:
            for other in hosts:
                if other is not host and not mesh.pings(host, other, wait=1):
                    failures.append((host.netns, other.netns, round(started)))
        time.sleep(max(0.0, 1 - (time.monotonic() - started)))
    assert not failures, failures

    restarted = start_coordinator(
        tmp_path,
        host=mesh.coordinator.host,
        port=mesh.coordinator.port,
        db_url=mesh.coordinator.db_url,
        extra=["--insecure"],
    )
    try:
        after = {
            h.netns: wait_connected(mesh, h, before[h.netns]["last_connected_at"])
            for h in hosts
        }
    finally:
        restarted.stop()

    for host in hosts:
        status, earlier = after[host.netns], before[host.netns]
        assert status["first_message"] == "resume", status
        assert status["reconnects"] > earlier["reconnects"], status
        # Nothing changed for any peer, so nothing was written to the device.
        assert status["operations_applied"] == earlier["operations_applied"], status
    # Jittered backoff: the nodes did not all come back at the same instant.
    assert len({s["last_connected_at"] for s in after.values()}) == len(hosts)


def test_a_restart_changes_nothing_and_hand_edits_are_undone(mesh: Mesh) -> None:
    host, other = mesh.lab.hosts[0], mesh.lab.hosts[1]
    other_key = mesh.node(other)["publicKey"]

    # 0 means off on the device; the default is the coordinator's 25 s.
    assert {p["keepalive"] for p in mesh.lab.hosts[-1].wg_peers().values()} == {"off"}
    assert {p["keepalive"] for p in host.wg_peers().values()} == {"25"}

    # A restart with the map unchanged writes nothing to the device.
    proc = mesh.daemons[host.netns]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)
    earlier = mesh.status(host)["last_connected_at"]
    mesh.up(host)
    status = wait_connected(mesh, host, earlier)
    time.sleep(RECONCILE_INTERVAL * 1.5)  # a reconcile tick passes too
    assert mesh.status(host)["operations_applied"] == 0, mesh.status(host)
    assert status["first_message"] == "resume"

    # A peer removed by hand is back within the reconcile interval.
    host.run("wg", "set", host.interface, "peer", other_key, "remove")
    assert other_key not in host.wg_peers()
    eventually(
        lambda: other_key in host.wg_peers(),
        RECONCILE_INTERVAL + 1,
        "the removed peer is back",
        step=0.1,
    )
    assert mesh.pings(host, other)

    # A peer added by hand is removed.
    stranger = base64.b64encode(secrets.token_bytes(32)).decode()
    host.run(
        "wg", "set", host.interface, "peer", stranger, "allowed-ips", "10.99.0.1/32"
    )
    assert stranger in host.wg_peers()
    eventually(
        lambda: stranger not in host.wg_peers(),
        RECONCILE_INTERVAL + 1,
        "the stranger is removed",
        step=0.1,
    )


def test_a_moved_underlay_address_reaches_every_peer(mesh: Mesh) -> None:
    mover, others = mesh.lab.hosts[0], mesh.lab.hosts[1:]
    mover_key = mesh.node(mover)["publicKey"]
    moved_to = mover.underlay.rsplit(".", 1)[0] + ".77"

    mover.run("ip", "addr", "del", f"{mover.underlay}/24", "dev", "eth0")
    mover.run("ip", "addr", "add", f"{moved_to}/24", "dev", "eth0")
    moved_at = time.monotonic()

    eventually(
        lambda: all(
            o.wg_peers()
            .get(mover_key, {})
            .get("endpoint", "")
            .startswith(f"{moved_to}:")
            for o in others
        ),
        5,
        f"every peer lists {moved_to}\n{mesh.logs()}",
        step=0.1,
    )
    assert time.monotonic() - moved_at <= 5
    for other in others:
        eventually(lambda o=other: mesh.pings(o, mover), 15, f"{other.netns} pings")
        eventually(lambda o=other: mesh.pings(mover, o), 15, f"pings {other.netns}")


def test_a_rotated_key_replaces_the_old_one_everywhere(mesh: Mesh) -> None:
    node, others = mesh.lab.hosts[0], mesh.lab.hosts[1:]
    old_key = mesh.node(node)["publicKey"]

    done = node.run(MESHD, "rotate-key", "--state-dir", str(node.state_dir))
    rotated_at = time.monotonic()
    new_key = done.stdout.strip()
    assert new_key and new_key != old_key, done.stderr

    def replaced() -> bool:
        return all(
            new_key in (peers := o.wg_peers()) and old_key not in peers for o in others
        )

    eventually(replaced, 5, f"every peer lists the new key\n{mesh.logs()}", step=0.1)
    assert time.monotonic() - rotated_at <= 5
    identity = json.loads((node.state_dir / "node.json").read_text())
    assert identity["public_key"] == new_key
    assert not (node.state_dir / "private.key.next").exists()
    for other in others:
        eventually(lambda o=other: mesh.pings(node, o), 20, f"pings {other.netns}")
        eventually(lambda o=other: mesh.pings(o, node), 20, f"{other.netns} pings")


def test_a_revoked_node_leaves_and_stays_out(mesh: Mesh, tmp_path: Path) -> None:
    victim = mesh.lab.hosts[0]
    proc = mesh.daemons[victim.netns]

    mesh.revoke(victim)
    revoked_at = time.monotonic()
    eventually(
        lambda: not victim.has_link(victim.interface),
        2,
        "the revoked node's interface is gone",
        step=0.05,
    )
    assert time.monotonic() - revoked_at <= 2
    assert proc.wait(10) == 3
    assert "revoked" in (tmp_path / f"{victim.netns}-up.log").read_text()

    again = victim.run(
        MESHD,
        "up",
        "--state-dir",
        str(victim.state_dir),
        "--interface",
        victim.interface,
        check=False,
    )
    assert again.returncode == 3, again.stderr
    assert "was revoked" in again.stderr and "meshd link" in again.stderr
    assert "Traceback" not in again.stderr
    assert not victim.has_link(victim.interface)


def test_a_killed_wireguard_go_is_restarted_and_configured(mesh: Mesh) -> None:
    host, others = mesh.lab.hosts[0], mesh.lab.hosts[1:]
    pid = _wireguard_go_pid(host)

    os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: _wireguard_go_pid(host, missing_ok=True) not in (None, pid),
        RECONCILE_INTERVAL + 10,
        f"wireguard-go is running again\n{mesh.logs()}",
    )
    expected = {mesh.node(o)["publicKey"] for o in others}
    eventually(
        lambda: set(host.wg_peers()) == expected, 10, "the peers are back", step=0.1
    )
    for other in others:
        eventually(lambda o=other: mesh.pings(host, o), 20, f"pings {other.netns}")


def _wireguard_go_pid(host: Host, missing_ok: bool = False) -> int | None:
    """The wireguard-go serving `host`'s interface (found, never guessed)."""
    for text in host.run("ip", "netns", "pids", host.netns).stdout.split():
        try:
            argv = Path(f"/proc/{text}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"wireguard-go") and host.interface.encode() in argv:
            return int(text)
    if missing_ok:
        return None
    raise AssertionError(f"no wireguard-go for {host.interface}")

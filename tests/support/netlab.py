"""A small lab of hosts in network namespaces, joined by one bridge.

    root namespace ── veth ──┐
                             br0 (in a switch namespace)
    node namespace 1 ─ veth ─┤
    node namespace 2 ─ veth ─┤
    ...

Underlay addresses come from 198.18.0.0/15 (set aside for network tests),
one random /24 per lab, so traffic never leaves the namespaces this lab
made. The coordinator listens on the root side (``.254``); node i is
``.(i+1)``. ``close()`` removes every namespace, link and process the lab
made, and is safe to call after a failure half-way through ``build``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def sh(
    *argv: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    netns: str
    underlay: str  # the host's address on the bridge
    interface: str  # its WireGuard interface (unique on the machine)
    state_dir: Path

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return sh(
            "ip", "netns", "exec", self.netns, *argv, check=check, timeout=timeout
        )

    def ping(self, address: str, count: int = 1, wait: int = 2) -> bool:
        done = self.run(
            "ping",
            "-n",
            "-c",
            str(count),
            "-W",
            str(wait),
            address,
            check=False,
            timeout=count * wait + 10,
        )
        return done.returncode == 0

    def wg_peers(self) -> dict[str, dict[str, str]]:
        """``wg show IFACE dump`` parsed: public key -> fields."""
        done = self.run("wg", "show", self.interface, "dump", check=False)
        if done.returncode != 0:
            return {}
        peers: dict[str, dict[str, str]] = {}
        for line in done.stdout.splitlines()[1:]:
            key, _psk, endpoint, allowed, handshake, rx, tx, keepalive = line.split(
                "\t"
            )
            peers[key] = {
                "endpoint": endpoint,
                "allowed_ips": allowed,
                "latest_handshake": handshake,
                "rx": rx,
                "tx": tx,
                "keepalive": keepalive,
            }
        return peers

    def has_link(self, name: str) -> bool:
        return self.run("ip", "link", "show", name, check=False).returncode == 0


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: int = field(default_factory=lambda: secrets.randbelow(254) + 1)
    hosts: list[Host] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"rmsw-{self.tag}"

    @property
    def root_address(self) -> str:
        return f"198.18.{self.subnet}.254"

    @property
    def root_veth(self) -> str:
        return f"rmr{self.tag}"

    def build(self, count: int, workdir: Path) -> None:
        self._add_namespace(self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        sh(
            "ip",
            "link",
            "add",
            self.root_veth,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            self.switch,
        )
        self._plug("up0")
        sh("ip", "addr", "add", f"{self.root_address}/24", "dev", self.root_veth)
        sh("ip", "link", "set", self.root_veth, "up")
        for i in range(count):
            self._add_host(i, workdir)

    def _add_namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _plug(self, port: str) -> None:
        sh("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.switch, "link", "set", port, "up")

    def _add_host(self, i: int, workdir: Path) -> None:
        netns = f"rmn-{self.tag}-{i}"
        self._add_namespace(netns)
        port = f"p{i}"
        sh(
            "ip",
            "-n",
            netns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.switch,
        )
        self._plug(port)
        underlay = f"198.18.{self.subnet}.{i + 1}"
        sh("ip", "-n", netns, "addr", "add", f"{underlay}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        state_dir = workdir / f"node{i}"
        self.hosts.append(Host(netns, underlay, f"rmw{self.tag}{i}", state_dir))

    def spawn(self, host: Host, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            _kill_group(proc)
        for netns in self._namespaces:
            # Whatever still runs inside (wireguard-go started by meshd).
            pids = sh("ip", "netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for netns in reversed(self._namespaces):
            sh("ip", "netns", "del", netns, check=False)
        sh("ip", "link", "del", self.root_veth, check=False)
        for host in self.hosts:
            Path(f"/var/run/wireguard/{host.interface}.sock").unlink(missing_ok=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

"""Throwaway network namespaces and wireguard-go devices for the meshd tests.

Everything a fixture creates it removes in teardown, also when the test
failed: namespaces, processes and the sockets they leave in the shared
/var/run/wireguard.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from support.prerequisites import require

from meshd.wireguard.uapi import socket_path_for


def _require_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces and TUN devices")
    if shutil.which("wireguard-go") is None:
        pytest.skip("wireguard-go is not installed")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace (only a down loopback in it)."""
    _require_namespaces()
    name = f"rmt-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def unique_interface(prefix: str = "rmu") -> str:
    # The UAPI socket directory is shared by every namespace on the host,
    # so names must be unique host-wide; 15 characters at most.
    return f"{prefix}{secrets.token_hex(4)}"


@dataclass
class RunningDevice:
    netns: str
    interface: str
    process: subprocess.Popen[bytes]

    @property
    def socket_path(self) -> Path:
        return socket_path_for(self.interface)

    def log(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")


@pytest.fixture
def device(netns: str) -> Iterator[RunningDevice]:
    """A wireguard-go device in `netns`, started by hand, not by our backend."""
    interface = unique_interface()
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, "wireguard-go", "-f", interface],
        env=dict(os.environ, WG_PROCESS_FOREGROUND="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    running = RunningDevice(netns, interface, process)
    try:
        _wait_for_socket(running)
        yield running
    finally:
        stop_process(process.pid)
        process.wait(timeout=5)
        running.socket_path.unlink(missing_ok=True)


def _wait_for_socket(running: RunningDevice) -> None:
    deadline = time.monotonic() + 10
    while not running.socket_path.exists():
        if running.process.poll() is not None:
            pytest.fail(f"wireguard-go exited: {running.log()}")
        if time.monotonic() > deadline:
            pytest.fail("wireguard-go did not open its socket within 10s")
        time.sleep(0.05)


def stop_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


MESHD = Path(sys.executable).parent / "meshd"

# A node as `meshd link` leaves it: keys are fixed so a test can spell them.
NODE_PRIVATE_KEY = "YB0WEtUfmKE1nKFqYNWK9IHAn1R8Vd2kcD9Nv2e9d2k="
COORDINATOR_PUBLIC_KEY = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="


def write_linked_state(state_dir: Path, coordinator: str) -> None:
    """Write the private.key, node.json and map.json of a linked node."""
    key = PrivateKey(base64.b64decode(NODE_PRIVATE_KEY))
    public_key = base64.b64encode(bytes(key.public_key)).decode()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = state_dir / "private.key"
    key_file.write_text(NODE_PRIVATE_KEY + "\n")
    key_file.chmod(0o600)
    identity = {
        "node_id": "node-1",
        "org_id": "org-1",
        "name": "laptop",
        "public_key": public_key,
        "coordinator_target": coordinator,
        "coordinator_public_key": COORDINATOR_PUBLIC_KEY,
        "ipv4": "100.64.0.7",
        "ipv6": "fd12:3456:789a::7",
    }
    (state_dir / "node.json").write_text(json.dumps(identity))
    saved_map = {
        "version": 3,
        "addresses": ["100.64.0.7/16", "fd12:3456:789a::7/48"],
        "name": "laptop",
        "peers": {
            COORDINATOR_PUBLIC_KEY: {
                "publicKey": COORDINATOR_PUBLIC_KEY,
                "name": "server",
                "allowedIps": ["100.64.0.2/32"],
            }
        },
    }
    (state_dir / "map.json").write_text(json.dumps(saved_map))


@pytest.fixture
def unreachable_coordinator() -> str:
    """HOST:PORT where nothing listens: a call there fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def linked_state_dir(tmp_path: Path, unreachable_coordinator: str) -> Path:
    state_dir = tmp_path / "state"
    write_linked_state(state_dir, unreachable_coordinator)
    return state_dir


def run_meshd(
    *args: str, env: dict[str, str] | None = None, obey_file_modes: bool = False
) -> subprocess.CompletedProcess[str]:
    """The installed `meshd` console script, with no RUNMESH_* from outside.

    `obey_file_modes`: as root, run meshd without the capabilities that let
    root read any file, so a file's mode 000 means "unreadable" to it.
    """
    argv = [str(MESHD), *args]
    if obey_file_modes and os.geteuid() == 0:
        require(shutil.which("setpriv") is not None, "setpriv is not installed")
        drop = "-dac_override,-dac_read_search"
        argv = ["setpriv", "--bounding-set", drop, "--", *argv]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNMESH_")}
    return subprocess.run(
        argv,
        env={**clean, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )

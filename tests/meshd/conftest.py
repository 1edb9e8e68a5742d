"""Throwaway network namespaces and wireguard-go devices for the meshd tests.

Everything a fixture creates it removes in teardown, also when the test
failed: namespaces, processes and the sockets they leave in the shared
/var/run/wireguard.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshd.wireguard.uapi import socket_path_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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

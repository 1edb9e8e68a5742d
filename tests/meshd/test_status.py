"""status.json and `meshd status`: written on change, read without a device."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from conftest import run_meshd

from meshd.state import SavedMap, StateDir
from meshd.status import NodeStatus, StatusWriter, StreamState, build_report, render
from meshd.wireguard.backend import WireGuardError
from meshd.wireguard.device import DeviceState, PeerConfig, PeerState

KEY_A = "A" * 43 + "="
KEY_B = "B" * 43 + "="


class FakeReader:
    def __init__(self, device: DeviceState | None) -> None:
        self.interface = "rm0"
        self.device = device

    async def read(self) -> DeviceState:
        if self.device is None:
            raise WireGuardError("no socket")
        return self.device


def test_status_is_written_only_when_it_changes(linked_state_dir: Path) -> None:
    state = StateDir(linked_state_dir)
    writer = StatusWriter(state, NodeStatus("rm0", "userspace", 51820, 1))

    writer.update(state=StreamState.CONNECTED, version=4)
    path = linked_state_dir / "status.json"
    first = path.stat().st_mtime_ns
    time.sleep(0.01)
    writer.update(state=StreamState.CONNECTED, version=4)

    assert path.stat().st_mtime_ns == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert state.load_status()["version"] == 4  # type: ignore[index]


@pytest.mark.anyio
async def test_the_report_joins_the_map_and_the_live_device(
    linked_state_dir: Path,
) -> None:
    identity = StateDir(linked_state_dir).load_identity()
    saved = SavedMap(3, [], "laptop", {KEY_A: {"name": "server", "allowedIps": []}})
    now = int(time.time())
    device = DeviceState(
        private_key=None,
        listen_port=51820,
        peers={
            KEY_A: PeerState(
                PeerConfig(KEY_A, ("100.64.0.2/32",), "198.18.0.2:51820", 25),
                latest_handshake=now - 12,
                rx_bytes=2048,
                tx_bytes=10,
            ),
            KEY_B: PeerState(PeerConfig(KEY_B, ("10.99.0.1/32",))),
        },
    )
    stream = {"state": "connected", "operations_applied": 7, "version": 5}

    report = await build_report(identity, saved, stream, FakeReader(device))
    text = "\n".join(render(report))

    assert report["version"] == 5
    by_key = {p["publicKey"]: p for p in report["peers"]}
    assert by_key[KEY_A]["handshakeAgeSeconds"] in (12, 13)
    assert by_key[KEY_A]["rxBytes"] == 2048
    assert by_key[KEY_B]["inMap"] is False
    assert "version  5" in text and "7 WireGuard operations" in text
    assert "2.0 KiB" in text and "(not in map)" in text and "never" in text


@pytest.mark.anyio
async def test_an_unreachable_device_is_reported_not_raised(
    linked_state_dir: Path,
) -> None:
    identity = StateDir(linked_state_dir).load_identity()

    report = await build_report(identity, None, None, FakeReader(None))

    assert report["device"] == {
        "reachable": False,
        "error": "no socket",
        "listenPort": None,
    }
    assert "not readable: no socket" in "\n".join(render(report))


def test_a_broken_status_json_does_not_stop_status(linked_state_dir: Path) -> None:
    (linked_state_dir / "status.json").write_text('{"state": "conn')

    result = run_meshd("status", "--state-dir", str(linked_state_dir))

    assert result.returncode == 0, result.stderr
    assert "status.json" in result.stderr and "Traceback" not in result.stderr
    assert "is `meshd up` running?" in result.stdout


def test_a_hostile_interface_in_status_json_is_not_used(
    linked_state_dir: Path,
) -> None:
    (linked_state_dir / "status.json").write_text('{"interface": "../../etc"}')

    result = run_meshd("status", "--json", "--state-dir", str(linked_state_dir))

    assert result.returncode == 0, result.stderr
    assert '"interface": "runmesh0"' in result.stdout

"""The state side of key rotation, the map's view of a rekeyed node, and
the keepalive override: each step a crash can interrupt is recoverable."""

from __future__ import annotations

import json
import plistlib
import re
import stat
from pathlib import Path

import pytest
from conftest import run_meshd

from meshd.errors import NodeRevoked, StateError
from meshd.peermap import PeerMapCopy
from meshd.reconciler import Reconciler
from meshd.state import StateDir
from meshd.wireguard.device import (
    DeviceState,
    Operation,
    PeerConfig,
    PeerState,
    UpdatePeer,
)
from runmesh.v1 import node_pb2
from runmesh.wgkey import encode_key

ROOT = Path(__file__).resolve().parents[2]


def _public(state: StateDir) -> str:
    return encode_key(bytes(state.load_key().public_key))


def test_a_promoted_next_key_becomes_the_key_and_the_identity(
    linked_state_dir: Path,
) -> None:
    state = StateDir(linked_state_dir)
    new_key = state.create_next_key()
    next_file = linked_state_dir / "private.key.next"
    assert stat.S_IMODE(next_file.stat().st_mode) == 0o600

    identity = state.promote_next_key(new_key)
    again = state.promote_next_key(new_key)  # a second finisher is harmless

    assert not next_file.exists()
    assert identity.public_key == again.public_key == _public(state)
    saved = json.loads((linked_state_dir / "node.json").read_text())
    assert saved["public_key"] == identity.public_key


def test_a_crash_between_key_and_identity_is_repaired_on_load(
    linked_state_dir: Path,
) -> None:
    state = StateDir(linked_state_dir)
    new_key = state.create_next_key()
    (linked_state_dir / "private.key.next").replace(linked_state_dir / "private.key")

    identity, key = state.load_node()

    assert bytes(key) == bytes(new_key)
    assert identity.public_key == _public(state)


def test_a_wrong_length_next_key_is_named(linked_state_dir: Path) -> None:
    (linked_state_dir / "private.key.next").write_text("AQEB\n")

    with pytest.raises(StateError, match="private.key.next"):
        StateDir(linked_state_dir).load_next_key()


def test_rotate_key_without_a_coordinator_fails_cleanly(
    linked_state_dir: Path,
) -> None:
    result = run_meshd("rotate-key", "--state-dir", str(linked_state_dir))

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "did not rotate the key" in result.stderr
    assert (linked_state_dir / "private.key").exists()


def test_revocation_forgets_a_next_key_too(linked_state_dir: Path) -> None:
    state = StateDir(linked_state_dir)
    state.create_next_key()

    state.mark_revoked("node revoked")

    assert not (linked_state_dir / "private.key.next").exists()
    with pytest.raises(NodeRevoked, match="meshd link"):
        state.load_identity()


def test_the_node_under_its_new_key_is_never_its_own_peer() -> None:
    peer_map = PeerMapCopy("old", version=1, node_id="node-me")
    delta = node_pb2.PeerDelta(
        from_version=1,
        version=2,
        removed=["old"],
        upserted=[node_pb2.Peer(node_id="node-me", name="me", public_key="new")],
    )

    peer_map.apply(delta)
    peer_map.rekey("new")

    assert peer_map.peers == {}
    assert peer_map.name == "me"


class FakeBackend:
    def __init__(self, device: DeviceState) -> None:
        self.device = device
        self.applied: list[Operation] = []

    async def start(self, interface: str, addresses: list[str], mtu: int) -> None:
        pass

    async def read(self) -> DeviceState:
        return self.device

    async def apply(self, ops: list[Operation]) -> None:
        self.applied += ops

    async def remove(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_persistent_keepalive_zero_turns_it_off_on_the_device(
    linked_state_dir: Path,
) -> None:
    key = StateDir(linked_state_dir).load_key()
    peer_key = "A" * 43 + "="
    config = PeerConfig(peer_key, ("100.64.0.2/32",), None, 25)
    device = DeviceState(
        private_key=encode_key(bytes(key)),
        listen_port=51820,
        peers={peer_key: PeerState(config)},
    )
    backend = FakeBackend(device)
    peer_map = PeerMapCopy("me", version=1, addresses=["100.64.0.7/16"])
    peer_map.peers[peer_key] = node_pb2.Peer(
        public_key=peer_key, allowed_ips=["100.64.0.2/32"], persistent_keepalive=25
    )

    reconciler = Reconciler(backend, "rm0", key, 51820, 1420, persistent_keepalive=0)
    await reconciler.converge(peer_map)

    assert backend.applied == [UpdatePeer(peer_key, persistent_keepalive=0)]


def test_systemd_does_not_restart_a_revoked_node_or_a_broken_state_dir() -> None:
    unit = (ROOT / "packaging/systemd/runmesh-meshd.service").read_text()

    found = re.search(r"^RestartPreventExitStatus=(.*)$", unit, re.MULTILINE)

    assert found is not None
    codes = {int(c) for c in found.group(1).split()}
    assert {NodeRevoked.exit_code, StateError.exit_code} <= codes
    assert "Restart=on-failure" in unit


def test_the_launchd_property_list_parses() -> None:
    path = ROOT / "packaging/launchd/dev.runmesh.meshd.plist"

    with path.open("rb") as file:
        plist = plistlib.load(file)

    assert plist["Label"] == "dev.runmesh.meshd"
    assert plist["ProgramArguments"][:2] == ["/usr/local/bin/meshd", "up"]

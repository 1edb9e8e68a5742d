"""One contract for every WireGuard backend: read, plan, apply, read again.

Each test runs against wireguard-go (userspace) and the kernel module, each
in a throwaway network namespace. The kernel runs are skipped, with the
reason, where the module is missing. Changes "behind the backend's back"
are made with `wg`, which reaches either kind of device.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from meshd.wireguard.backend import WireGuardBackend
from meshd.wireguard.device import (
    AddPeer,
    DeviceState,
    PeerConfig,
    RemovePeer,
    UpdatePeer,
    clamp_private_key,
)
from meshd.wireguard.kernel import KernelBackend, kernel_available
from meshd.wireguard.netconf import NetworkInterface
from meshd.wireguard.reconcile import DesiredDevice, plan
from meshd.wireguard.uapi import socket_path_for
from meshd.wireguard.userspace import UserspaceBackend

pytestmark = pytest.mark.anyio

ADDRESSES = ["100.64.0.7/16", "fd12:3456:789a::7/48"]


@dataclass
class Subject:
    backend: WireGuardBackend
    netns: str
    interface: str

    def wg(self, *args: str) -> None:
        command = ["ip", "netns", "exec", self.netns, "wg", *args]
        subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.fixture(params=["userspace", "kernel"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    interface = f"rmc{secrets.token_hex(4)}"
    if request.param == "kernel":
        yield from _kernel_subject(interface)
        return
    # conftest's namespace: it also checks that wireguard-go is installed.
    netns: str = request.getfixturevalue("netns")
    backend = UserspaceBackend(netns=netns, log_path=tmp_path / "wg.log")
    try:
        yield Subject(backend, netns, interface)
    finally:
        _kill_wireguard_go(socket_path_for(interface))


def _kernel_subject(interface: str) -> Iterator[Subject]:
    available, reason = kernel_available()
    if not available:
        pytest.skip(reason)
    netns = f"rmc-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # Deleting the namespace deletes the link in it.
        yield Subject(KernelBackend(netns=netns), netns, interface)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def _kill_wireguard_go(path: Path) -> None:
    # The namespace goes with the netns fixture, and a kernel link with it;
    # a wireguard-go a failed test left running has to be stopped by hand.
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        os.kill(struct.unpack("3i", creds)[0], signal.SIGKILL)
    except OSError:
        pass
    path.unlink(missing_ok=True)


def public_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def three_peers() -> DesiredDevice:
    private = base64.b64encode(bytes(PrivateKey.generate())).decode()
    peers = [
        PeerConfig(
            public_key(),
            ("100.64.0.2/32", "fd12:3456:789a::2/128"),
            "198.18.0.2:51820",
            25,
        ),
        PeerConfig(public_key(), ("100.64.0.3/32", "10.3.0.0/16"), None, 0),
        PeerConfig(public_key(), ("100.64.0.4/32",), "[2001:db8::4]:51821", 0),
    ]
    return DesiredDevice(private, 51820, {p.public_key: p for p in peers})


def assert_matches(state: DeviceState, desired: DesiredDevice) -> None:
    assert state.private_key == clamp_private_key(desired.private_key)
    assert state.listen_port == desired.listen_port
    assert {key: peer.config for key, peer in state.peers.items()} == desired.peers


async def converge(subject: Subject, desired: DesiredDevice) -> None:
    await subject.backend.start(subject.interface, ADDRESSES, 1420)
    await subject.backend.apply(plan(desired, await subject.backend.read()))


async def test_a_plan_from_empty_to_three_peers_reads_back_and_then_plans_nothing(
    subject: Subject,
) -> None:
    desired = three_peers()
    await subject.backend.start(subject.interface, ADDRESSES, 1420)
    fresh = await subject.backend.read()
    assert fresh.peers == {}

    ops = plan(desired, fresh)
    await subject.backend.apply(ops)

    assert sum(isinstance(op, AddPeer) for op in ops) == 3
    state = await subject.backend.read()
    assert_matches(state, desired)
    assert plan(desired, state) == []
    assert plan(desired, state, previous=desired) == []


async def test_a_peer_removed_behind_the_backends_back_is_planned_back(
    subject: Subject,
) -> None:
    desired = three_peers()
    await converge(subject, desired)
    gone = sorted(desired.peers)[1]
    subject.wg("set", subject.interface, "peer", gone, "remove")

    ops = plan(desired, await subject.backend.read(), previous=desired)
    await subject.backend.apply(ops)

    assert ops == [AddPeer(desired.peers[gone])]
    assert_matches(await subject.backend.read(), desired)


async def test_an_extra_peer_added_behind_its_back_is_planned_away(
    subject: Subject,
) -> None:
    desired = three_peers()
    await converge(subject, desired)
    stranger = public_key()
    subject.wg(
        "set", subject.interface, "peer", stranger, "allowed-ips", "10.99.0.0/24"
    )

    ops = plan(desired, await subject.backend.read(), previous=desired)
    await subject.backend.apply(ops)

    assert ops == [RemovePeer(stranger)]
    assert_matches(await subject.backend.read(), desired)


async def test_an_endpoint_only_change_keeps_the_peers_allowed_ips(
    subject: Subject,
) -> None:
    before = three_peers()
    await converge(subject, before)
    moved_key = sorted(before.peers)[0]
    moved = PeerConfig(
        moved_key,
        before.peers[moved_key].allowed_ips,
        "198.18.0.99:4000",
        before.peers[moved_key].persistent_keepalive,
    )
    after = DesiredDevice(
        before.private_key, before.listen_port, {**before.peers, moved_key: moved}
    )

    ops = plan(after, await subject.backend.read(), previous=before)
    await subject.backend.apply(ops)

    assert ops == [UpdatePeer(moved_key, endpoint="198.18.0.99:4000")]
    state = await subject.backend.read()
    assert state.peers[moved_key].config == moved
    assert_matches(state, after)


async def test_a_roamed_endpoint_is_left_where_wireguard_put_it(
    subject: Subject,
) -> None:
    desired = three_peers()
    await converge(subject, desired)
    roamed_key = next(k for k, p in desired.peers.items() if p.endpoint is not None)
    # What the device does itself when the peer's packets come from elsewhere.
    subject.wg(
        "set", subject.interface, "peer", roamed_key, "endpoint", "203.0.113.9:7"
    )

    state = await subject.backend.read()

    assert state.peers[roamed_key].config.endpoint == "203.0.113.9:7"
    assert plan(desired, state, previous=desired) == []


async def test_remove_takes_the_interface_away(subject: Subject) -> None:
    await converge(subject, three_peers())
    link = NetworkInterface(subject.interface, netns=subject.netns)
    assert await link.addresses() == sorted(ADDRESSES)
    assert await link.is_up()

    await subject.backend.remove()

    assert not await link.exists()

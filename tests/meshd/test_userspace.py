"""UserspaceBackend and netconf against real wireguard-go in a throwaway namespace."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from meshd.wireguard.backend import WireGuardBackend
from meshd.wireguard.device import AddPeer, PeerConfig
from meshd.wireguard.netconf import NetworkInterface, underlay_addresses
from meshd.wireguard.uapi import socket_path_for
from meshd.wireguard.userspace import UserspaceBackend, WireGuardGoError

if TYPE_CHECKING:
    from conftest import RunningDevice

pytestmark = pytest.mark.anyio

ADDRESSES = ["100.64.0.7/16", "fd12:3456:789a::7/48"]
PEER = PeerConfig("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", ("100.64.0.2/32",))


@pytest.fixture
def interface(netns: str) -> Iterator[str]:
    """A unique interface name; whatever wireguard-go serves it dies in teardown."""
    # Unique host-wide: the socket directory is shared by every namespace.
    name = f"rmb{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        _kill_server(socket_path_for(name))


def _kill_server(path: Path) -> None:
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        os.kill(struct.unpack("3i", creds)[0], signal.SIGKILL)
    except OSError:
        pass
    path.unlink(missing_ok=True)


def backend_in(netns: str, tmp_path: Path) -> UserspaceBackend:
    return UserspaceBackend(netns=netns, log_path=tmp_path / "wireguard-go.log")


def test_the_userspace_backend_fits_the_backend_interface() -> None:
    # Checked by mypy on the tests; at run time it only has to construct.
    backend: WireGuardBackend = UserspaceBackend()
    assert backend is not None


async def test_start_brings_up_the_interface_with_its_addresses(
    netns: str, interface: str, tmp_path: Path
) -> None:
    backend = backend_in(netns, tmp_path)

    await backend.start(interface, ADDRESSES, 1380)

    link = NetworkInterface(interface, netns=netns)
    assert await link.addresses() == sorted(ADDRESSES)
    assert await link.is_up()
    assert await link.mtu() == 1380
    assert (await backend.read()).peers == {}
    await backend.remove()


async def test_start_replaces_addresses_that_should_not_be_there(
    netns: str, interface: str, tmp_path: Path
) -> None:
    backend = backend_in(netns, tmp_path)
    await backend.start(interface, ["100.64.0.9/16"], 1420)
    await backend.close()

    await backend.start(interface, ADDRESSES, 1420)

    link = NetworkInterface(interface, netns=netns)
    assert await link.addresses() == sorted(ADDRESSES)
    await backend.remove()


async def test_a_second_start_attaches_and_keeps_the_configuration(
    netns: str, interface: str, tmp_path: Path
) -> None:
    first = backend_in(netns, tmp_path)
    await first.start(interface, ADDRESSES, 1420)
    await first.apply([AddPeer(PEER)])
    spawned = first.pid
    await first.close()

    second = backend_in(netns, tmp_path)
    await second.start(interface, ADDRESSES, 1420)

    assert second.pid is None
    assert _pids_serving(interface) == [spawned]
    assert (await second.read()).peers[PEER.public_key].config == PEER
    await second.remove()


async def test_ensure_running_restarts_a_killed_wireguard_go(
    netns: str, interface: str, tmp_path: Path
) -> None:
    backend = backend_in(netns, tmp_path)
    await backend.start(interface, ADDRESSES, 1420)
    assert await backend.ensure_running() is False
    killed = backend.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    os.waitpid(killed, 0)

    assert await backend.ensure_running() is True

    assert backend.pid not in (None, killed)
    assert (await backend.read()).peers == {}
    link = NetworkInterface(interface, netns=netns)
    assert await link.addresses() == sorted(ADDRESSES)
    assert await link.is_up()
    await backend.remove()


async def test_remove_stops_the_process_and_deletes_link_and_socket(
    netns: str, interface: str, tmp_path: Path
) -> None:
    backend = backend_in(netns, tmp_path)
    await backend.start(interface, ADDRESSES, 1420)
    pid = backend.pid
    assert pid is not None

    await backend.remove()

    assert not await NetworkInterface(interface, netns=netns).exists()
    assert not socket_path_for(interface).exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def test_remove_stops_an_attached_wireguard_go_too(
    netns: str, interface: str, tmp_path: Path
) -> None:
    first = backend_in(netns, tmp_path)
    await first.start(interface, ADDRESSES, 1420)
    await first.close()
    second = backend_in(netns, tmp_path)
    await second.start(interface, ADDRESSES, 1420)

    await second.remove()

    assert _pids_serving(interface) == []
    assert not socket_path_for(interface).exists()


async def test_a_wireguard_go_that_exits_at_once_is_reported_with_its_output(
    netns: str, interface: str, tmp_path: Path
) -> None:
    fake = tmp_path / "fake-wireguard-go"
    fake.write_text("#!/bin/sh\necho 'cannot create TUN: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    backend = UserspaceBackend(
        netns=netns, wireguard_go=str(fake), log_path=tmp_path / "log"
    )

    with pytest.raises(WireGuardGoError, match=r"exit status 3.*cannot create TUN"):
        await backend.start(interface, ADDRESSES, 1420)


async def test_a_same_named_device_in_another_namespace_is_not_attached(
    device: RunningDevice, tmp_path: Path
) -> None:
    # meshd in the host namespace finds the socket of a test namespace's
    # device: it must refuse rather than configure someone else's node.
    backend = UserspaceBackend(log_path=tmp_path / "log")

    with pytest.raises(WireGuardGoError, match="not in this network namespace"):
        await backend.start(device.interface, ADDRESSES, 1420)


async def test_underlay_addresses_skip_loopback_down_links_and_wireguard(
    netns: str, interface: str, tmp_path: Path
) -> None:
    backend = backend_in(netns, tmp_path)
    await backend.start(interface, ADDRESSES, 1420)
    for command in [
        "link add rmv0 type veth peer name rmv1",
        "link add rmv2 type veth peer name rmv3",
        "addr add 198.18.0.1/15 dev rmv0",
        "addr add fd00:198:18::1/64 dev rmv0 nodad",
        "addr add 198.18.0.5/15 dev rmv2",
        "link set rmv0 up",
        "link set rmv1 up",
        "link set lo up",
    ]:
        subprocess.run(["ip", "-n", netns, *command.split()], check=True)

    found = await underlay_addresses(exclude=[interface], netns=netns)

    # rmv2 is down, so 198.18.0.5 is not a way in.
    assert found == ["198.18.0.1", "fd00:198:18::1"]
    await backend.remove()


def _pids_serving(interface: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"wireguard-go -f {interface}$"], capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]

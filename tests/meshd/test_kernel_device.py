"""KernelBackend against a real kernel WireGuard device in a throwaway namespace.

Where the module is missing (these machines, and CI) the device tests are
skipped with the probe's reason; that is not an unmet prerequisite of the
suite, so `support.prerequisites.require` is not used. The tests at the end
check what happens without the module and run only there.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from nacl.public import PrivateKey

from meshd.backends import make_backend
from meshd.wireguard.device import (
    AddPeer,
    PeerConfig,
    RemovePeer,
    SetInterface,
    UpdatePeer,
    clamp_private_key,
)
from meshd.wireguard.kernel import (
    MISSING_MODULE,
    KernelBackend,
    KernelDeviceError,
    KernelModuleMissing,
    kernel_available,
)
from meshd.wireguard.netconf import NetworkInterface
from meshd.wireguard.userspace import UserspaceBackend

pytestmark = pytest.mark.anyio

ADDRESSES = ["100.64.0.7/16", "fd12:3456:789a::7/48"]


def _namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    name = f"rmk-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def kernel_netns() -> Iterator[str]:
    """A fresh namespace on a kernel with WireGuard; skipped, with why, without."""
    available, reason = kernel_available()
    if not available:
        pytest.skip(reason)
    yield from _namespace()


@pytest.fixture
def bare_netns() -> Iterator[str]:
    yield from _namespace()


def key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def interface() -> str:
    return f"rmk{secrets.token_hex(4)}"


async def test_start_creates_a_wireguard_link_with_addresses_mtu_and_up(
    kernel_netns: str,
) -> None:
    backend = KernelBackend(netns=kernel_netns)
    name = interface()

    await backend.start(name, ADDRESSES, 1380)

    link = NetworkInterface(name, netns=kernel_netns)
    assert await link.addresses() == sorted(ADDRESSES)
    assert await link.is_up()
    assert await link.mtu() == 1380
    state = await backend.read()
    assert (state.private_key, state.peers) == (None, {})
    await backend.remove()
    assert not await link.exists()


async def test_apply_and_read_round_trip_keys_port_and_peers(
    kernel_netns: str,
) -> None:
    backend = KernelBackend(netns=kernel_netns)
    await backend.start(interface(), ADDRESSES, 1420)
    private = base64.b64encode(bytes(PrivateKey.generate())).decode()
    a = PeerConfig(key(), ("100.64.0.2/32", "fd12::2/128"), "198.18.0.2:51820", 25)
    b = PeerConfig(key(), ("100.64.0.3/32",), "[2001:db8::3]:51821", 0)

    await backend.apply(
        [SetInterface(private, 51820), AddPeer(a), AddPeer(b), AddPeer(a)]
    )

    state = await backend.read()
    assert state.private_key == clamp_private_key(private)
    assert state.listen_port == 51820
    assert {k: p.config for k, p in state.peers.items()} == {
        a.public_key: a,
        b.public_key: b,
    }
    await backend.remove()


async def test_updates_change_only_what_they_carry_and_removal_removes(
    kernel_netns: str,
) -> None:
    backend = KernelBackend(netns=kernel_netns)
    await backend.start(interface(), ADDRESSES, 1420)
    a = PeerConfig(key(), ("100.64.0.2/32", "10.2.0.0/16"), "198.18.0.2:1", 25)
    b = PeerConfig(key(), ("100.64.0.3/32",))
    await backend.apply([AddPeer(a), AddPeer(b)])

    await backend.apply(
        [
            UpdatePeer(a.public_key, endpoint="198.18.0.9:2"),
            UpdatePeer(a.public_key, persistent_keepalive=0),
            RemovePeer(b.public_key),
            UpdatePeer(b.public_key, allowed_ips=("10.9.0.0/16",)),
        ]
    )

    state = await backend.read()
    # update_only: the update of the removed peer did not bring it back.
    assert set(state.peers) == {a.public_key}
    assert state.peers[a.public_key].config == PeerConfig(
        a.public_key, a.allowed_ips, "198.18.0.9:2", 0
    )
    await backend.remove()


async def test_a_device_too_big_for_one_message_reads_back_whole(
    kernel_netns: str,
) -> None:
    backend = KernelBackend(netns=kernel_netns)
    await backend.start(interface(), ADDRESSES, 1420)
    # Hundreds of peers, one with hundreds of prefixes: the dump spans
    # several messages and that peer's allowed IPs are cut between two.
    wide = PeerConfig(key(), tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(600)))
    peers = [wide] + [
        PeerConfig(key(), (f"100.65.{i // 256}.{i % 256}/32",), f"198.18.1.1:{i + 1}")
        for i in range(400)
    ]

    await backend.apply([AddPeer(p) for p in peers])

    state = await backend.read()
    assert {k: p.config for k, p in state.peers.items()} == {
        p.public_key: p for p in peers
    }
    await backend.remove()


async def test_a_second_start_attaches_and_keeps_the_configuration(
    kernel_netns: str,
) -> None:
    name = interface()
    first = KernelBackend(netns=kernel_netns)
    await first.start(name, ADDRESSES, 1420)
    peer = PeerConfig(key(), ("100.64.0.2/32",))
    await first.apply([AddPeer(peer)])
    await first.close()

    second = KernelBackend(netns=kernel_netns)
    await second.start(name, ADDRESSES, 1420)

    assert (await second.read()).peers[peer.public_key].config == peer
    await second.remove()


async def test_start_refuses_a_same_named_link_that_is_not_wireguard(
    bare_netns: str,
) -> None:
    # Runs with or without the module: the name is taken before any
    # WireGuard link would be made.
    name = interface()
    command = f"link add {name} type veth peer name {name}p"
    subprocess.run(["ip", "-n", bare_netns, *command.split()], check=True)

    with pytest.raises(KernelDeviceError, match="veth link, not a kernel WireGuard"):
        await KernelBackend(netns=bare_netns).start(name, ADDRESSES, 1420)


# --- without the module ------------------------------------------------------


@pytest.fixture
def no_module() -> str:
    available, reason = kernel_available()
    if available:
        pytest.skip("the WireGuard kernel module is present")
    return reason


def test_the_probe_reason_names_the_missing_module(no_module: str) -> None:
    assert no_module.startswith(f"{MISSING_MODULE}: ")


async def test_start_without_the_module_says_to_use_userspace(
    no_module: str, bare_netns: str
) -> None:
    with pytest.raises(KernelModuleMissing, match="--backend userspace"):
        await KernelBackend(netns=bare_netns).start(interface(), ADDRESSES, 1420)


def test_make_backend_kernel_without_the_module_is_a_clear_error(
    no_module: str,
) -> None:
    with pytest.raises(KernelModuleMissing) as raised:
        make_backend("kernel")

    message = str(raised.value)
    assert "kernel module is missing" in message
    assert "--backend userspace" in message
    assert no_module in message


def test_make_backend_auto_without_the_module_falls_back_to_userspace(
    no_module: str,
) -> None:
    assert isinstance(make_backend("auto"), UserspaceBackend)


def test_make_backend_userspace_and_unknown_names() -> None:
    assert isinstance(make_backend("userspace"), UserspaceBackend)
    with pytest.raises(ValueError, match="unknown backend 'tun'"):
        make_backend("tun")

"""The UAPI client against a real wireguard-go in a throwaway namespace."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from nacl.public import PrivateKey

from meshd.wireguard.device import (
    AddPeer,
    PeerConfig,
    RemovePeer,
    SetInterface,
    UpdatePeer,
    clamp_private_key,
)
from meshd.wireguard.reconcile import DesiredDevice, plan
from meshd.wireguard.uapi import UapiClient, UapiError, encode_operations
from runmesh.wgkey import InvalidKey

if TYPE_CHECKING:
    from conftest import RunningDevice

pytestmark = pytest.mark.anyio


def new_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate())).decode()


def public_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


PEER = public_key()
OTHER = public_key()


def client_for(device: RunningDevice) -> UapiClient:
    return UapiClient(device.socket_path)


async def test_interface_and_peer_settings_read_back(device: RunningDevice) -> None:
    client = client_for(device)
    private = new_key()
    config = PeerConfig(
        PEER, ("fd12:3456:789a::2/128", "100.64.0.2/32"), "[fd00::2]:51820", 25
    )

    await client.apply([SetInterface(private, 51999), AddPeer(config)])
    state = await client.get()

    assert state.private_key == clamp_private_key(private)
    assert state.listen_port == 51999
    assert state.peers[PEER].config == config
    assert state.peers[PEER].latest_handshake == 0


async def test_an_endpoint_update_keeps_allowed_ips(device: RunningDevice) -> None:
    client = client_for(device)
    config = PeerConfig(PEER, ("100.64.0.2/32", "fd12::2/128"), "198.18.0.2:51820")
    await client.apply([AddPeer(config)])

    await client.apply([UpdatePeer(PEER, endpoint="198.18.0.9:4000")])

    updated = (await client.get()).peers[PEER].config
    assert updated.endpoint == "198.18.0.9:4000"
    assert updated.allowed_ips == config.allowed_ips


async def test_an_allowed_ips_update_replaces_them(device: RunningDevice) -> None:
    client = client_for(device)
    await client.apply([AddPeer(PeerConfig(PEER, ("100.64.0.2/32",), None, 25))])

    await client.apply([UpdatePeer(PEER, allowed_ips=("100.64.0.9/32",))])

    updated = (await client.get()).peers[PEER].config
    assert updated.allowed_ips == ("100.64.0.9/32",)
    assert updated.persistent_keepalive == 25


async def test_keepalive_zero_turns_it_off(device: RunningDevice) -> None:
    client = client_for(device)
    await client.apply([AddPeer(PeerConfig(PEER, (), None, 25))])

    await client.apply([UpdatePeer(PEER, persistent_keepalive=0)])

    assert (await client.get()).peers[PEER].config.persistent_keepalive == 0


async def test_an_update_of_a_missing_peer_does_not_create_it(
    device: RunningDevice,
) -> None:
    client = client_for(device)

    await client.apply([UpdatePeer(PEER, allowed_ips=("100.64.0.2/32",))])

    assert (await client.get()).peers == {}


async def test_a_removed_peer_is_gone_and_others_stay(device: RunningDevice) -> None:
    client = client_for(device)
    await client.apply(
        [
            AddPeer(PeerConfig(PEER, ("100.64.0.2/32",))),
            AddPeer(PeerConfig(OTHER, ("100.64.0.3/32",))),
        ]
    )

    await client.apply([RemovePeer(PEER)])

    assert set((await client.get()).peers) == {OTHER}


async def test_a_plan_applied_to_the_device_plans_nothing_next_time(
    device: RunningDevice,
) -> None:
    client = client_for(device)
    peers = {
        PEER: PeerConfig(PEER, ("100.64.0.2/32", "fd12::2/128"), "[fd00:0::2]:1", 25),
        OTHER: PeerConfig(OTHER, ("100.64.0.3/32",), "198.18.0.3:51820"),
    }
    wanted = DesiredDevice(new_key(), 51998, peers)

    await client.apply(plan(wanted, await client.get()))

    assert plan(wanted, await client.get()) == []


async def test_a_malformed_key_is_named_and_nothing_is_sent(
    device: RunningDevice,
) -> None:
    client = client_for(device)
    good = AddPeer(PeerConfig(PEER, ("100.64.0.2/32",)))
    bad = RemovePeer("not-a-key")

    with pytest.raises(InvalidKey, match=r"operation 1 \(RemovePeer\): public_key"):
        await client.apply([good, bad])

    assert (await client.get()).peers == {}


async def test_a_malformed_private_key_is_not_echoed(device: RunningDevice) -> None:
    secret = "s3cret" * 8

    with pytest.raises(InvalidKey) as raised:
        await client_for(device).apply([SetInterface(private_key=secret)])

    assert "private_key" in str(raised.value)
    assert secret not in str(raised.value)


async def test_a_refused_set_raises_with_the_errno(device: RunningDevice) -> None:
    with pytest.raises(UapiError, match=r"errno=-22 \(EINVAL") as raised:
        await client_for(device).set(["listen_port=not-a-port"])

    assert raised.value.errno == -22


async def test_a_missing_socket_says_wireguard_go_is_not_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "absent.sock"

    with pytest.raises(UapiError, match="wireguard-go is not running") as raised:
        await UapiClient(path).get()

    assert str(path) in str(raised.value)


async def test_a_silent_socket_times_out_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"

    async def say_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()

    server = await asyncio.start_unix_server(say_nothing, path)
    async with server:
        with pytest.raises(UapiError, match=r"did not answer get within 0.2s"):
            await UapiClient(path, timeout=0.2).get()


def test_interface_lines_come_before_peer_lines() -> None:
    lines = encode_operations(
        [
            RemovePeer(PEER),
            SetInterface(listen_port=1),
            UpdatePeer(OTHER, endpoint=None),
        ]
    )

    assert lines[0] == "listen_port=1"
    assert lines[1:3] == [f"public_key={base64.b64decode(PEER).hex()}", "remove=true"]
    assert lines[4:] == ["update_only=true"]

"""The kernel backend's translation, against messages laid out as the kernel sends them.

Dumps are built byte for byte the way drivers/net/wireguard/netlink.c
writes them (nested peers and allowed IPs each under attribute type 0, the
interface's own attributes only in the first message, a peer cut short
repeated with its public key and the rest of its allowed IPs) and decoded
by pyroute2's own `wgmsg`, so the tests see exactly what `WireGuard.info`
returns. Requests go the other way through pyroute2's own peer encoder and
are decoded back, so the tests see the attributes that reach the kernel.
"""

from __future__ import annotations

import base64
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink.generic.wireguard import (
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    AsyncWireGuard,
    wgmsg,
)

from meshd.wireguard.device import (
    AddPeer,
    PeerConfig,
    RemovePeer,
    SetInterface,
    UpdatePeer,
)
from meshd.wireguard.kernel import (
    DeviceRequest,
    KernelBackend,
    encode_operations,
    parse_dump,
)
from runmesh.wgkey import InvalidKey

NLA_F_NESTED = 0x8000
WG_CMD_GET_DEVICE = 0
NLM_F_MULTI = 0x2

# Attribute numbers from <linux/wireguard.h>.
DEVICE_IFINDEX, DEVICE_IFNAME, DEVICE_PRIVATE_KEY, DEVICE_PUBLIC_KEY = 1, 2, 3, 4
DEVICE_LISTEN_PORT, DEVICE_FWMARK, DEVICE_PEERS = 6, 7, 8
PEER_PUBLIC_KEY, PEER_ENDPOINT, PEER_KEEPALIVE = 1, 4, 5
PEER_HANDSHAKE, PEER_RX, PEER_TX, PEER_ALLOWEDIPS, PEER_PROTOCOL = 6, 7, 8, 9, 10
ALLOWEDIP_FAMILY, ALLOWEDIP_IPADDR, ALLOWEDIP_CIDR_MASK = 1, 2, 3


def raw_key(n: int) -> bytes:
    return bytes([n]) * 32


def key(n: int) -> str:
    return base64.b64encode(raw_key(n)).decode()


PRIVATE, PUBLIC = 0x41, 0x42
A, B, C, D = 0xA1, 0xB2, 0xC3, 0xD4


# --- kernel-shaped messages -------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + bytes(-length % 4)


def nest(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def endpoint(address: str, port: int) -> bytes:
    if ":" in address:
        packed = socket.inet_pton(socket.AF_INET6, address)
        # struct sockaddr_in6: family, port, flowinfo, address, scope id.
        payload = struct.pack("H", socket.AF_INET6) + struct.pack(">HI", port, 0)
        return attr(PEER_ENDPOINT, payload + packed + bytes(4))
    packed = socket.inet_pton(socket.AF_INET, address)
    # struct sockaddr_in: family, port, address, 8 bytes of zero.
    payload = struct.pack("H", socket.AF_INET) + struct.pack(">H", port)
    return attr(PEER_ENDPOINT, payload + packed + bytes(8))


def allowed_ips(*cidrs: str) -> bytes:
    entries = []
    for cidr in cidrs:
        address, mask = cidr.split("/")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        entries.append(
            nest(
                0,
                attr(ALLOWEDIP_FAMILY, struct.pack("H", family)),
                attr(ALLOWEDIP_IPADDR, socket.inet_pton(family, address)),
                attr(ALLOWEDIP_CIDR_MASK, struct.pack("B", int(mask))),
            )
        )
    return nest(PEER_ALLOWEDIPS, *entries)


def full_peer(
    n: int,
    *cidrs: str,
    at: tuple[str, int] | None = None,
    keepalive: int = 0,
    handshake: tuple[int, int] = (0, 0),
    rx: int = 0,
    tx: int = 0,
) -> bytes:
    """A peer as the kernel writes it the first time it appears in a dump."""
    parts = [attr(PEER_PUBLIC_KEY, raw_key(n))]
    parts.append(attr(PEER_HANDSHAKE, struct.pack("qq", *handshake)))
    parts.append(attr(PEER_KEEPALIVE, struct.pack("H", keepalive)))
    parts.append(attr(PEER_RX, struct.pack("Q", rx)))
    parts.append(attr(PEER_TX, struct.pack("Q", tx)))
    parts.append(attr(PEER_PROTOCOL, struct.pack("I", 1)))
    if at is not None:
        parts.append(endpoint(*at))
    parts.append(allowed_ips(*cidrs))
    return nest(0, *parts)


def continued_peer(n: int, *cidrs: str) -> bytes:
    """A peer cut short in the previous message: its key and more allowed IPs."""
    return nest(0, attr(PEER_PUBLIC_KEY, raw_key(n)), allowed_ips(*cidrs))


def interface_attrs(listen_port: int = 51820, with_keys: bool = True) -> bytes:
    parts = [
        attr(DEVICE_LISTEN_PORT, struct.pack("H", listen_port)),
        attr(DEVICE_FWMARK, struct.pack("I", 0)),
        attr(DEVICE_IFINDEX, struct.pack("I", 7)),
        attr(DEVICE_IFNAME, b"rm0\0"),
    ]
    if with_keys:
        parts.append(attr(DEVICE_PRIVATE_KEY, raw_key(PRIVATE)))
        parts.append(attr(DEVICE_PUBLIC_KEY, raw_key(PUBLIC)))
    return b"".join(parts)


def dump_message(*body: bytes, sequence: int = 1) -> wgmsg:
    genl = struct.pack("BBH", WG_CMD_GET_DEVICE, 1, 0)
    payload = genl + b"".join(body)
    header = struct.pack("IHHII", 16 + len(payload), 0x20, NLM_F_MULTI, sequence, 0)
    message = wgmsg(header + payload)
    message.decode()
    return message


# --- dumps -------------------------------------------------------------------


def test_a_single_message_dump_becomes_the_device_state() -> None:
    message = dump_message(
        interface_attrs(listen_port=51820),
        nest(
            DEVICE_PEERS,
            full_peer(
                A,
                "100.64.0.2/32",
                "fd12::2/128",
                at=("198.18.0.2", 51820),
                keepalive=25,
                handshake=(1_700_000_000, 123),
                rx=10,
                tx=20,
            ),
            full_peer(B, "100.64.0.3/32"),
        ),
    )

    state = parse_dump([message])

    assert state.private_key == key(PRIVATE)
    assert state.listen_port == 51820
    assert set(state.peers) == {key(A), key(B)}
    a = state.peers[key(A)]
    assert a.config == PeerConfig(
        key(A), ("100.64.0.2/32", "fd12::2/128"), "198.18.0.2:51820", 25
    )
    assert (a.latest_handshake, a.rx_bytes, a.tx_bytes) == (1_700_000_000, 10, 20)
    b = state.peers[key(B)]
    assert b.config == PeerConfig(key(B), ("100.64.0.3/32",), None, 0)
    assert b.latest_handshake == 0


def test_a_dump_over_three_messages_merges_peers_by_public_key() -> None:
    # B's allowed IPs did not fit in the first message and continue in the
    # second; D's continue from the second into the third.
    first = dump_message(
        interface_attrs(listen_port=40000),
        nest(
            DEVICE_PEERS,
            full_peer(A, "100.64.0.2/32", at=("198.18.0.2", 1)),
            full_peer(B, "10.0.0.0/24", "10.0.1.0/24", at=("198.18.0.3", 2)),
        ),
        sequence=1,
    )
    second = dump_message(
        nest(
            DEVICE_PEERS,
            continued_peer(B, "10.0.2.0/24", "fd12:b::/64"),
            full_peer(C, "100.64.0.4/32", keepalive=15),
            full_peer(D, "10.9.0.0/24", handshake=(1_700_000_500, 0)),
        ),
        sequence=1,
    )
    third = dump_message(
        nest(DEVICE_PEERS, continued_peer(D, "10.9.1.0/24")), sequence=1
    )

    state = parse_dump([first, second, third])

    assert state.private_key == key(PRIVATE)
    assert state.listen_port == 40000
    assert set(state.peers) == {key(A), key(B), key(C), key(D)}
    assert state.peers[key(B)].config == PeerConfig(
        key(B),
        ("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "fd12:b::/64"),
        "198.18.0.3:2",
    )
    # The continuation said nothing about D's handshake: the first part holds.
    assert state.peers[key(D)].config.allowed_ips == ("10.9.0.0/24", "10.9.1.0/24")
    assert state.peers[key(D)].latest_handshake == 1_700_000_500
    assert state.peers[key(C)].config.persistent_keepalive == 15


def test_ipv4_and_ipv6_endpoints_are_spelled_as_peer_configs_spell_them() -> None:
    message = dump_message(
        interface_attrs(),
        nest(
            DEVICE_PEERS,
            full_peer(A, "100.64.0.2/32", at=("198.18.0.2", 51820)),
            full_peer(B, "100.64.0.3/32", at=("2001:db8:0:0::3", 51821)),
        ),
    )

    peers = parse_dump([message]).peers

    assert peers[key(A)].config.endpoint == "198.18.0.2:51820"
    assert peers[key(B)].config.endpoint == "[2001:db8::3]:51821"


def test_a_device_without_keys_or_peers_reads_as_fresh() -> None:
    message = dump_message(interface_attrs(listen_port=0, with_keys=False))

    state = parse_dump([message])

    assert (state.private_key, state.listen_port, state.peers) == (None, 0, {})


# --- requests ----------------------------------------------------------------


def sent_peer(request: DeviceRequest) -> dict[str, Any]:
    """The peer attributes pyroute2 puts on the wire for `request`, decoded."""
    assert request.peer is not None
    message = wgmsg()
    message["attrs"].append(["WGDEVICE_A_IFNAME", "rm0"])
    # The encoder WireGuard.set uses; it needs no socket.
    AsyncWireGuard._wg_set_peer(
        AsyncWireGuard.__new__(AsyncWireGuard), message, dict(request.peer)
    )
    message["header"]["type"] = 0x20
    message.encode()
    decoded = wgmsg(message.data)
    decoded.decode()
    (peer,) = decoded.get_attr("WGDEVICE_A_PEERS")
    return {name: value for name, value, *_ in peer["attrs"]}


def allowed(attrs: dict[str, Any]) -> list[str]:
    return [entry["addr"] for entry in attrs["WGPEER_A_ALLOWEDIPS"]]


def test_an_add_sends_everything_and_replaces_allowed_ips() -> None:
    config = PeerConfig(
        key(A), ("100.64.0.2/32", "fd12::2/128"), "[2001:db8::3]:51820", 25
    )

    (request,) = encode_operations([AddPeer(config)])
    attrs = sent_peer(request)

    assert attrs["WGPEER_A_PUBLIC_KEY"] == key(A).encode()
    assert attrs["WGPEER_A_FLAGS"] == WGPEER_F_REPLACE_ALLOWEDIPS
    assert allowed(attrs) == ["100.64.0.2/32", "fd12::2/128"]
    assert attrs["WGPEER_A_ENDPOINT"]["addr"] == "2001:db8::3"
    assert attrs["WGPEER_A_ENDPOINT"]["port"] == 51820
    assert attrs["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"] == 25


def test_an_endpoint_only_update_never_touches_allowed_ips() -> None:
    (request,) = encode_operations([UpdatePeer(key(A), endpoint="198.18.0.9:4000")])
    attrs = sent_peer(request)

    assert "WGPEER_A_ALLOWEDIPS" not in attrs
    assert attrs["WGPEER_A_FLAGS"] == WGPEER_F_UPDATE_ONLY
    assert not attrs["WGPEER_A_FLAGS"] & WGPEER_F_REPLACE_ALLOWEDIPS
    assert attrs["WGPEER_A_ENDPOINT"]["addr"] == "198.18.0.9"
    assert attrs["WGPEER_A_ENDPOINT"]["port"] == 4000
    assert "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL" not in attrs


def test_an_allowed_ips_update_replaces_them_for_an_existing_peer_only() -> None:
    op = UpdatePeer(key(A), allowed_ips=("fd12::2/128", "100.64.0.2/32"))

    (request,) = encode_operations([op])
    attrs = sent_peer(request)

    assert attrs["WGPEER_A_FLAGS"] == WGPEER_F_REPLACE_ALLOWEDIPS | WGPEER_F_UPDATE_ONLY
    assert allowed(attrs) == ["100.64.0.2/32", "fd12::2/128"]
    assert "WGPEER_A_ENDPOINT" not in attrs


def test_a_removal_sets_the_remove_me_flag_and_nothing_else() -> None:
    (request,) = encode_operations([RemovePeer(key(A))])
    attrs = sent_peer(request)

    assert attrs == {
        "WGPEER_A_PUBLIC_KEY": key(A).encode(),
        "WGPEER_A_FLAGS": WGPEER_F_REMOVE_ME,
    }


def test_keepalive_zero_is_sent_as_zero_to_turn_it_off() -> None:
    (request,) = encode_operations([UpdatePeer(key(A), persistent_keepalive=0)])
    attrs = sent_peer(request)

    assert attrs["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"] == 0
    assert "WGPEER_A_ALLOWEDIPS" not in attrs


def test_operations_keep_their_order_one_peer_per_request() -> None:
    ops = [
        SetInterface(private_key=key(PRIVATE), listen_port=51820),
        RemovePeer(key(B)),
        AddPeer(PeerConfig(key(A), ("100.64.0.2/32",))),
        SetInterface(),
    ]

    requests = encode_operations(ops)

    assert [r.private_key for r in requests] == [key(PRIVATE), None, None]
    assert requests[0] == DeviceRequest(private_key=key(PRIVATE), listen_port=51820)
    assert [r.peer and r.peer["public_key"] for r in requests[1:]] == [key(B), key(A)]


def test_a_bad_key_is_refused_before_anything_is_sent_naming_its_field() -> None:
    ops = [RemovePeer(key(B)), SetInterface(private_key="c2VjcmV0")]

    with pytest.raises(InvalidKey, match=r"operation 1 .*private_key") as raised:
        encode_operations(ops)

    assert "c2VjcmV0" not in str(raised.value)


# --- the backend's wiring, with pyroute2's client replaced -------------------


class RecordingWireGuard:
    """Stands in for pyroute2's WireGuard: records sets, answers a fixed dump."""

    sets: list[dict[str, Any]] = []
    dump: list[wgmsg] = []
    opened_in_netns: list[str | None] = []

    def __init__(self, netns: str | None = None) -> None:
        self.opened_in_netns.append(netns)

    def __enter__(self) -> RecordingWireGuard:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def info(self, interface: str) -> list[wgmsg]:
        return self.dump

    def set(self, interface: str, **arguments: Any) -> None:
        self.sets.append({"interface": interface, **arguments})


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[RecordingWireGuard]:
    monkeypatch.setattr(RecordingWireGuard, "sets", [])
    monkeypatch.setattr(RecordingWireGuard, "opened_in_netns", [])
    monkeypatch.setattr("meshd.wireguard.kernel.WireGuard", RecordingWireGuard)
    return RecordingWireGuard


@pytest.mark.anyio
async def test_apply_sends_one_set_per_request_in_the_backends_namespace(
    recording: type[RecordingWireGuard],
) -> None:
    backend = KernelBackend(netns="ns1")
    backend.adopt("rm0")

    await backend.apply(
        [SetInterface(listen_port=51821), RemovePeer(key(A)), RemovePeer(key(B))]
    )

    assert recording.opened_in_netns == ["ns1"]
    assert recording.sets == [
        {"interface": "rm0", "private_key": None, "listen_port": 51821, "peer": None},
        {
            "interface": "rm0",
            "private_key": None,
            "listen_port": None,
            "peer": {"public_key": key(A), "remove": True},
        },
        {
            "interface": "rm0",
            "private_key": None,
            "listen_port": None,
            "peer": {"public_key": key(B), "remove": True},
        },
    ]


@pytest.mark.anyio
async def test_read_merges_the_whole_dump_the_client_returns(
    recording: type[RecordingWireGuard], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        RecordingWireGuard,
        "dump",
        [
            dump_message(
                interface_attrs(), nest(DEVICE_PEERS, full_peer(A, "10.0.0.0/24"))
            ),
            dump_message(nest(DEVICE_PEERS, continued_peer(A, "10.0.1.0/24"))),
        ],
    )
    backend = KernelBackend()
    backend.adopt("rm0")

    state = await backend.read()

    assert state.peers[key(A)].config.allowed_ips == ("10.0.0.0/24", "10.0.1.0/24")

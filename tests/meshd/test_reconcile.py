from __future__ import annotations

import base64

import pytest

from meshd.wireguard.device import (
    AddPeer,
    DeviceState,
    PeerConfig,
    PeerState,
    RemovePeer,
    SetInterface,
    UpdatePeer,
    clamp_private_key,
    normalise_endpoint,
)
from meshd.wireguard.reconcile import (
    DesiredDevice,
    OverlappingAllowedIPs,
    check_no_overlap,
    plan,
)


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


PRIVATE = clamp_private_key(key(1))
A, B, C = key(0xA1), key(0xB2), key(0xC3)


def peer(
    public_key: str,
    *allowed_ips: str,
    endpoint: str | None = None,
    keepalive: int = 0,
) -> PeerConfig:
    return PeerConfig(public_key, allowed_ips, endpoint, keepalive)


def desired(*peers: PeerConfig, port: int = 51820) -> DesiredDevice:
    return DesiredDevice(PRIVATE, port, {p.public_key: p for p in peers})


def actual(*peers: PeerConfig, port: int = 51820) -> DeviceState:
    states = {p.public_key: PeerState(p, 1_700_000_000, 10, 20) for p in peers}
    return DeviceState(PRIVATE, port, states)


def test_an_unchanged_device_plans_nothing() -> None:
    a = peer(A, "100.64.0.2/32", "fd12::2/128", endpoint="198.18.0.2:51820")
    b = peer(B, "100.64.0.3/32", endpoint="[2001:db8::3]:51820", keepalive=25)

    assert plan(desired(a, b), actual(a, b)) == []


def test_an_unclamped_private_key_matches_the_clamped_one_the_device_reports() -> None:
    wanted = DesiredDevice(key(0xFF), 51820, {})
    reported = DeviceState(clamp_private_key(key(0xFF)), 51820, {})

    assert plan(wanted, reported) == []


def test_a_fresh_device_gets_its_key_port_and_peers() -> None:
    a = peer(A, "100.64.0.2/32")
    fresh = DeviceState(private_key=None, listen_port=40000, peers={})

    assert plan(desired(a), fresh) == [
        SetInterface(private_key=PRIVATE, listen_port=51820),
        AddPeer(a),
    ]


def test_only_the_differing_interface_setting_is_set() -> None:
    assert plan(desired(port=51821), actual()) == [SetInterface(listen_port=51821)]


def test_listen_port_zero_keeps_whatever_port_the_device_chose() -> None:
    assert plan(desired(port=0), actual(port=43210)) == []


def test_missing_peers_are_added_and_extra_ones_removed_first() -> None:
    a, b, c = peer(A, "100.64.0.2/32"), peer(B, "100.64.0.3/32"), peer(C, "10.0.0.0/8")

    ops = plan(desired(a, c), actual(a, b))

    assert ops == [RemovePeer(B), AddPeer(c)]


def test_removing_the_last_peer_yields_a_remove() -> None:
    assert plan(desired(), actual(peer(A, "100.64.0.2/32"))) == [RemovePeer(A)]


def test_an_endpoint_change_leaves_allowed_ips_alone() -> None:
    before = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820")
    after = peer(A, "100.64.0.2/32", endpoint="198.18.0.9:51820")

    ops = plan(desired(after), actual(before))

    assert ops == [UpdatePeer(A, endpoint="198.18.0.9:51820")]
    assert isinstance(ops[0], UpdatePeer) and ops[0].allowed_ips is None


def test_an_update_carries_only_the_fields_that_differ() -> None:
    before = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:1", keepalive=0)
    after = peer(
        A, "100.64.0.2/32", "fd12::2/128", endpoint="198.18.0.2:1", keepalive=25
    )

    assert plan(desired(after), actual(before)) == [
        UpdatePeer(
            A, allowed_ips=("100.64.0.2/32", "fd12::2/128"), persistent_keepalive=25
        )
    ]


def test_allowed_ips_order_and_spelling_cause_no_update() -> None:
    wanted = peer(A, "fd12:0:0:0::2/128", "100.64.0.2/32", "100.64.0.2/32")
    reported = peer(A, "100.64.0.2/32", "fd12::2/128")

    assert plan(desired(wanted), actual(reported)) == []


def test_ipv6_endpoints_compare_by_address_not_spelling() -> None:
    wanted = peer(A, "100.64.0.2/32", endpoint="[2001:0db8:0:0::3]:51820")
    reported = peer(A, "100.64.0.2/32", endpoint="[2001:db8::3]:51820")

    assert plan(desired(wanted), actual(reported)) == []


def test_an_endpoint_the_map_leaves_unset_is_not_cleared() -> None:
    roamed = peer(A, "100.64.0.2/32", endpoint="198.18.0.7:4444")

    assert plan(desired(peer(A, "100.64.0.2/32")), actual(roamed)) == []


@pytest.mark.parametrize("text", ["example.com:51820", "198.18.0.1", "[198.18.0.1]:1"])
def test_endpoints_must_be_addresses_with_ports(text: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        normalise_endpoint(text)


def test_overlapping_allowed_ips_of_two_peers_are_refused_naming_both() -> None:
    a = peer(A, "100.64.0.0/24")
    b = peer(B, "fd12::3/128", "100.64.0.3/32")

    with pytest.raises(OverlappingAllowedIPs) as raised:
        check_no_overlap({A: a, B: b})

    message = str(raised.value)
    assert A in message and B in message
    assert "100.64.0.0/24" in message and "100.64.0.3/32" in message


def test_the_same_prefix_on_two_peers_is_an_overlap() -> None:
    with pytest.raises(OverlappingAllowedIPs):
        plan(desired(peer(A, "fd12::2/128"), peer(B, "fd12:0::2/128")), actual())


def test_nested_prefixes_of_one_peer_and_disjoint_peers_are_fine() -> None:
    a = peer(A, "10.0.0.0/8", "10.1.0.0/16", "fd12::/48")
    b = peer(B, "11.0.0.0/8", "100.64.0.3/32", "fd13::/48")

    check_no_overlap({A: a, B: b})


def test_an_overlap_hidden_under_a_peers_own_nested_prefix_is_found() -> None:
    a = peer(A, "10.0.0.0/8", "10.1.0.0/16")
    b = peer(B, "10.2.0.0/16")

    with pytest.raises(OverlappingAllowedIPs, match="10.0.0.0/8"):
        check_no_overlap({A: a, B: b})


def test_a_peer_that_roamed_is_not_pulled_back_to_the_same_map_endpoint() -> None:
    mapped = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820")
    roamed = peer(A, "100.64.0.2/32", endpoint="203.0.113.9:40000")

    ops = plan(desired(mapped), actual(roamed), previous=desired(mapped))

    assert ops == []


def test_an_endpoint_the_coordinator_moved_is_set_even_over_a_roamed_one() -> None:
    before = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820")
    after = peer(A, "100.64.0.2/32", endpoint="198.18.0.9:51820")
    roamed = peer(A, "100.64.0.2/32", endpoint="203.0.113.9:40000")

    ops = plan(desired(after), actual(roamed), previous=desired(before))

    assert ops == [UpdatePeer(A, endpoint="198.18.0.9:51820")]


def test_a_device_without_an_endpoint_gets_the_map_one_despite_no_move() -> None:
    mapped = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820")

    ops = plan(desired(mapped), actual(peer(A, "100.64.0.2/32")), desired(mapped))

    assert ops == [UpdatePeer(A, endpoint="198.18.0.2:51820")]


def test_a_peer_new_to_the_map_but_already_on_the_device_gets_its_endpoint() -> None:
    mapped = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820")
    stale = peer(A, "100.64.0.2/32", endpoint="203.0.113.9:40000")

    ops = plan(desired(mapped), actual(stale), previous=desired())

    assert ops == [UpdatePeer(A, endpoint="198.18.0.2:51820")]


def test_allowed_ips_and_keepalive_are_repaired_while_a_roamed_endpoint_stays() -> None:
    mapped = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820", keepalive=25)
    drifted = peer(A, "100.64.0.9/32", endpoint="203.0.113.9:40000", keepalive=0)

    ops = plan(desired(mapped), actual(drifted), previous=desired(mapped))

    assert ops == [
        UpdatePeer(A, allowed_ips=("100.64.0.2/32",), persistent_keepalive=25)
    ]


def test_without_a_previous_map_a_roamed_endpoint_is_set_back_as_before() -> None:
    mapped = peer(A, "100.64.0.2/32", endpoint="198.18.0.2:51820")
    roamed = peer(A, "100.64.0.2/32", endpoint="203.0.113.9:40000")

    assert plan(desired(mapped), actual(roamed)) == [
        UpdatePeer(A, endpoint="198.18.0.2:51820")
    ]

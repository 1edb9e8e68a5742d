"""Mesh addresses: per-org prefixes, unique slots, exhaustion and quarantine."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from domain_db import (
    Sessions,
    approve,
    link_node,
    load,
    load_org,
    new_caller,
    revoke,
    start,
)
from sqlalchemy import func, select, update

from coordinator import accounts
from coordinator.accounts import Caller
from coordinator.errors import ResourceExhausted
from coordinator.ids import utcnow
from coordinator.models import Address, AuditEvent, LinkRequest, LinkState, Node
from coordinator.settings import Settings

pytestmark = pytest.mark.anyio

SETTINGS = Settings()
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
ULA = ipaddress.IPv6Network("fd00::/8")


async def tiny_org(sessions: Sessions) -> Caller:
    """An org whose /30 holds exactly two hosts."""
    return await new_caller(
        sessions, org="tiny", email="admin@tiny.test", ipv4_prefix_length=30
    )


async def count(sessions: Sessions, model: type[object], org_id: str) -> int:
    with sessions.sessions() as session:
        total = session.scalar(
            select(func.count()).select_from(model).where(model.org_id == org_id)  # type: ignore[attr-defined]
        )
    return int(total or 0)


async def release_long_ago(sessions: Sessions, node_id: str, age: dt.timedelta) -> None:
    with sessions.sessions() as session, session.begin():
        session.execute(
            update(Address)
            .where(Address.node_id == node_id)
            .values(released_at=utcnow() - age)
        )


async def test_every_node_gets_addresses_no_other_node_has(sessions: Sessions) -> None:
    caller = await new_caller(sessions)

    nodes = [await link_node(sessions, SETTINGS, caller) for _ in range(40)]

    addresses = [n.address for n in nodes]
    assert all(a is not None for a in addresses)
    assert len({a.ipv4 for a in addresses if a}) == 40
    assert len({a.ipv6 for a in addresses if a}) == 40


async def test_ipv4_addresses_lie_in_the_org_prefix_inside_cgnat_space(
    sessions: Sessions,
) -> None:
    caller = await new_caller(sessions)
    nodes = [await link_node(sessions, SETTINGS, caller) for _ in range(5)]
    org = await load_org(sessions, caller.org_id)

    prefix = ipaddress.IPv4Network(org.ipv4_prefix)
    assert prefix.prefixlen == SETTINGS.org_ipv4_prefix_length
    assert prefix.subnet_of(CGNAT)
    for node in nodes:
        assert node.address is not None
        ipv4 = ipaddress.IPv4Address(node.address.ipv4)
        assert ipv4 in prefix
        assert ipv4 not in (prefix.network_address, prefix.broadcast_address)


async def test_ipv6_addresses_lie_in_the_org_ula_48(sessions: Sessions) -> None:
    caller = await new_caller(sessions)
    nodes = [await link_node(sessions, SETTINGS, caller) for _ in range(5)]
    org = await load_org(sessions, caller.org_id)

    prefix = ipaddress.IPv6Network(org.ipv6_prefix)
    assert prefix.prefixlen == 48
    assert prefix.subnet_of(ULA)
    for node in nodes:
        assert node.address is not None
        assert ipaddress.IPv6Address(node.address.ipv6) in prefix


async def test_two_orgs_get_prefixes_that_do_not_overlap(sessions: Sessions) -> None:
    acme = await new_caller(sessions)
    other = await new_caller(sessions, org="other", email="x@other.test")
    acme_node = await link_node(sessions, SETTINGS, acme)
    other_node = await link_node(sessions, SETTINGS, other)

    a, b = await load_org(sessions, acme.org_id), await load_org(sessions, other.org_id)

    assert not ipaddress.ip_network(a.ipv4_prefix).overlaps(
        ipaddress.ip_network(b.ipv4_prefix)
    )
    assert not ipaddress.ip_network(a.ipv6_prefix).overlaps(
        ipaddress.ip_network(b.ipv6_prefix)
    )
    assert acme_node.address and other_node.address
    assert ipaddress.ip_address(other_node.address.ipv4) in ipaddress.ip_network(
        b.ipv4_prefix
    )
    assert ipaddress.ip_address(other_node.address.ipv6) in ipaddress.ip_network(
        b.ipv6_prefix
    )


async def test_an_org_prefix_of_another_length_avoids_existing_orgs(
    sessions: Sessions,
) -> None:
    acme = await new_caller(sessions)
    tiny = await tiny_org(sessions)

    a, t = await load_org(sessions, acme.org_id), await load_org(sessions, tiny.org_id)

    assert ipaddress.ip_network(t.ipv4_prefix).prefixlen == 30
    assert ipaddress.ip_network(t.ipv4_prefix).subnet_of(CGNAT)
    assert not ipaddress.ip_network(a.ipv4_prefix).overlaps(
        ipaddress.ip_network(t.ipv4_prefix)
    )


async def test_a_new_org_when_cgnat_space_is_full_is_resource_exhausted(
    sessions: Sessions,
) -> None:
    await new_caller(
        sessions, org="everything", email="a@all.test", ipv4_prefix_length=10
    )

    with pytest.raises(ResourceExhausted, match="no free /16"):
        with sessions.sessions() as session, session.begin():
            accounts.ensure_org(session, "latecomer")


async def test_the_third_node_of_a_two_host_prefix_is_resource_exhausted(
    sessions: Sessions,
) -> None:
    caller = await tiny_org(sessions)
    first = await link_node(sessions, SETTINGS, caller)
    second = await link_node(sessions, SETTINGS, caller)
    assert first.address and second.address
    org_before = await load_org(sessions, caller.org_id)
    third = await start(sessions, SETTINGS)

    with pytest.raises(ResourceExhausted) as refused:
        await approve(sessions, SETTINGS, caller, third.code)

    message = refused.value.message
    assert "exhausted" in message and org_before.ipv4_prefix in message
    assert "all 2 addresses" in message


async def test_an_exhausted_approval_leaves_nothing_behind(sessions: Sessions) -> None:
    caller = await tiny_org(sessions)
    for _ in range(2):
        await link_node(sessions, SETTINGS, caller)
    org_before = await load_org(sessions, caller.org_id)
    audit_before = await count(sessions, AuditEvent, caller.org_id)
    third = await start(sessions, SETTINGS)

    with pytest.raises(ResourceExhausted):
        await approve(sessions, SETTINGS, caller, third.code)

    assert await count(sessions, Node, caller.org_id) == 2
    assert await count(sessions, Address, caller.org_id) == 2
    assert await count(sessions, AuditEvent, caller.org_id) == audit_before
    org_after = await load_org(sessions, caller.org_id)
    assert org_after.mesh_version == org_before.mesh_version
    assert org_after.next_host_index == org_before.next_host_index
    request = await load(sessions, LinkRequest, third.id)
    assert request.state == LinkState.PENDING
    assert request.node_id is None


async def test_a_revoked_address_is_not_reused_during_the_quarantine(
    sessions: Sessions,
) -> None:
    caller = await tiny_org(sessions)
    gone = await link_node(sessions, SETTINGS, caller)
    await link_node(sessions, SETTINGS, caller)
    await revoke(sessions, caller, gone.id)
    await release_long_ago(sessions, gone.id, SETTINGS.address_quarantine / 2)
    waiting = await start(sessions, SETTINGS)

    with pytest.raises(ResourceExhausted, match="quarantine"):
        await approve(sessions, SETTINGS, caller, waiting.code)


async def test_a_revoked_address_is_reused_after_the_quarantine(
    sessions: Sessions,
) -> None:
    caller = await tiny_org(sessions)
    gone = await link_node(sessions, SETTINGS, caller)
    kept = await link_node(sessions, SETTINGS, caller)
    assert gone.address and kept.address
    await revoke(sessions, caller, gone.id)
    await release_long_ago(
        sessions, gone.id, SETTINGS.address_quarantine + dt.timedelta(minutes=1)
    )

    newcomer = await link_node(sessions, SETTINGS, caller)

    assert newcomer.address is not None
    assert (newcomer.address.ipv4, newcomer.address.ipv6) == (
        gone.address.ipv4,
        gone.address.ipv6,
    )
    assert newcomer.address.released_at is None
    with sessions.sessions() as session:
        slot = session.scalar(select(Address).where(Address.ipv4 == gone.address.ipv4))
        revoked = session.get(Node, gone.id)
    assert slot is not None and slot.node_id == newcomer.id
    assert revoked is not None and revoked.address is None


async def test_the_quarantine_follows_the_setting(sessions: Sessions) -> None:
    short = Settings(address_quarantine=dt.timedelta(minutes=5))
    caller = await tiny_org(sessions)
    gone = await link_node(sessions, short, caller)
    await link_node(sessions, short, caller)
    await revoke(sessions, caller, gone.id)
    await release_long_ago(sessions, gone.id, dt.timedelta(minutes=6))

    newcomer = await link_node(sessions, short, caller)

    assert newcomer.address and gone.address
    assert newcomer.address.ipv4 == gone.address.ipv4


async def test_a_revoked_node_keeps_its_address_while_quarantined(
    sessions: Sessions,
) -> None:
    caller = await new_caller(sessions)
    gone = await link_node(sessions, SETTINGS, caller)
    await revoke(sessions, caller, gone.id)

    newcomer = await link_node(sessions, SETTINGS, caller)

    assert gone.address and newcomer.address
    assert newcomer.address.ipv4 != gone.address.ipv4
    with sessions.sessions() as session:
        revoked = session.get(Node, gone.id)
    assert revoked is not None and revoked.address is not None
    assert revoked.address.ipv4 == gone.address.ipv4
    assert revoked.address.released_at is not None

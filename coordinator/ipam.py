"""Mesh addresses: a prefix pair per org, one host slot per node.

Each org owns an IPv4 prefix inside 100.64.0.0/10 (a /16 by default) and a
random IPv6 ULA /48 (RFC 4193). A node's slot index i gives it
``v4_network + i`` and ``v6_network + i``, so both addresses come from one
allocation. Allocation starts at the org's ``next_host_index`` instead of
scanning what is taken; the (org, address) unique constraints make a race
between replicas fail in the database, and the caller retries.

A revoked node's slot keeps its ``node_id`` until the quarantine has passed,
so traffic or config still naming the old peer can never reach a new device.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import InvalidArgument, ResourceExhausted
from coordinator.ids import utcnow
from coordinator.models import Address, Org

CGNAT_RANGE = ipaddress.IPv4Network("100.64.0.0/10")
ULA_RANGE = ipaddress.IPv6Network("fd00::/8")
DEFAULT_QUARANTINE = dt.timedelta(hours=24)


def choose_ipv4_prefix(session: Session, prefix_length: int) -> str:
    """The first prefix of that length inside 100.64.0.0/10 no org holds."""
    if not CGNAT_RANGE.prefixlen <= prefix_length <= 30:
        raise InvalidArgument("IPv4 prefix length must be between 10 and 30")
    taken = [
        ipaddress.IPv4Network(p) for p in session.scalars(select(Org.ipv4_prefix)).all()
    ]
    for candidate in CGNAT_RANGE.subnets(new_prefix=prefix_length):
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate)
    raise ResourceExhausted(
        f"no free /{prefix_length} left inside {CGNAT_RANGE} for a new org"
    )


def random_ula_prefix() -> str:
    """A random /48 under fd00::/8 (40 random bits, RFC 4193 section 3.2)."""
    global_id = secrets.randbits(40)
    network = int(ULA_RANGE.network_address) | (global_id << 80)
    return str(ipaddress.IPv6Network((network, 48)))


# More than the approvals of one batch (coordinator.approvals.MAX_BATCH).
REUSE_CANDIDATES = 128


def host_count(org: Org) -> int:
    """Usable slots: the IPv4 prefix minus its network and broadcast address."""
    return int(ipaddress.IPv4Network(org.ipv4_prefix).num_addresses) - 2


def addresses_for(org: Org, host_index: int) -> tuple[str, str]:
    v4 = ipaddress.IPv4Network(org.ipv4_prefix)
    v6 = ipaddress.IPv6Network(org.ipv6_prefix)
    return str(v4.network_address + host_index), str(v6.network_address + host_index)


def allocate_address(
    session: Session,
    org: Org,
    node_id: str,
    quarantine: dt.timedelta = DEFAULT_QUARANTINE,
) -> Address:
    """Give ``node_id`` a free slot of ``org`` inside the caller's transaction.

    The org row must be locked for writing by the caller's transaction (on
    SQLite every write transaction is; on PostgreSQL the caller selects it
    FOR UPDATE), so ``next_host_index`` is not handed out twice.
    """
    count = host_count(org)
    if org.next_host_index <= count:
        index = org.next_host_index
        org.next_host_index = index + 1
        ipv4, ipv6 = addresses_for(org, index)
        address = Address(
            org_id=org.id, host_index=index, ipv4=ipv4, ipv6=ipv6, node_id=node_id
        )
        session.add(address)
        return address

    # The oldest released slots first. A slot handed out earlier in this
    # unit of work (a batch of approvals, autoflush off) still reads as
    # released in the database but not in the session: skip it.
    candidates = session.scalars(
        select(Address)
        .where(
            Address.org_id == org.id,
            Address.released_at.is_not(None),
            Address.released_at <= utcnow() - quarantine,
        )
        .order_by(Address.released_at)
        .limit(REUSE_CANDIDATES)
    )
    reusable = next((a for a in candidates if a.released_at is not None), None)
    if reusable is None:
        raise ResourceExhausted(
            f"the address pool of org {org.id} ({org.ipv4_prefix}) is exhausted: "
            f"all {count} addresses are in use or in quarantine"
        )
    reusable.node_id = node_id
    reusable.released_at = None
    return reusable


def release_address(address: Address) -> None:
    """Start the quarantine of a revoked node's slot."""
    address.released_at = utcnow()

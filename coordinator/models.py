"""The coordinator's tables (SQLAlchemy 2.0 declarative).

Constraints live in the schema, not only in Python: a second approval, a
duplicate address or two active nodes with one key fail in the database even
when two replicas race.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, whatever the backend stores.

    SQLite has no time zones; without this, values come back naive and
    comparisons with aware ``now()`` raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Any
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Any
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Role(enum.StrEnum):
    # Everything a member can do, plus managing keys and users.
    ADMIN = "admin"
    # Links, sees and manages the org's nodes within the key's scopes.
    MEMBER = "member"


class LinkState(enum.StrEnum):
    # Waiting for an approval; valid until expires_at.
    PENDING = "pending"
    # Approved once; node_id is set. A code is never approved twice.
    APPROVED = "approved"
    # Past expires_at, or replaced by a newer start for the same key.
    EXPIRED = "expired"
    # Refused by a member.
    DENIED = "denied"


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    ipv4_prefix: Mapped[str] = mapped_column(String(43), unique=True)
    ipv6_prefix: Mapped[str] = mapped_column(String(43), unique=True)
    # Rises with every change that affects a peer map; the one row that
    # holds it, so versions never go backwards across restarts.
    mesh_version: Mapped[int] = mapped_column(BigInteger, default=0)
    # Next host index to try; allocation starts here instead of scanning.
    next_host_index: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org_id", "email"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    # SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so an operator can tell keys apart in a list.
    display_prefix: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class LinkRequest(Base):
    __tablename__ = "link_requests"
    __table_args__ = (
        Index("ix_link_requests_public_key_state", "public_key", "state"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Unique for ever, so a code names one request without ambiguity.
    code: Mapped[str] = mapped_column(String(16), unique=True)
    public_key: Mapped[str] = mapped_column(String(44))
    device_label: Mapped[str] = mapped_column(String(256), default="")
    os: Mapped[str] = mapped_column(String(64), default="")
    app_version: Mapped[str] = mapped_column(String(64), default="")
    hostname: Mapped[str] = mapped_column(String(256), default="")
    client_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_polled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"))
    approved_by: Mapped[str | None] = mapped_column(String(40))
    # Tells the unit of work to insert the node before the request that
    # names it; never loaded (lazy="raise"), node_id is what code reads.
    node: Mapped[Node | None] = relationship(lazy="raise")


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (
        # One active node per key and per name; revoked nodes keep theirs
        # for the record without blocking a new device.
        Index(
            "uq_nodes_active_public_key",
            "public_key",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
        Index(
            "uq_nodes_org_active_name",
            "org_id",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
        Index("ix_nodes_org_created", "org_id", "created_at", "id"),
        Index("ix_nodes_org_owner", "org_id", "owner_user_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(63))
    device_label: Mapped[str] = mapped_column(String(256), default="")
    hostname: Mapped[str] = mapped_column(String(256), default="")
    os: Mapped[str] = mapped_column(String(64), default="")
    app_version: Mapped[str] = mapped_column(String(64), default="")
    public_key: Mapped[str] = mapped_column(String(44))
    owner_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    endpoints: Mapped[list[str]] = mapped_column(JSON, default=list)
    listen_port: Mapped[int] = mapped_column(Integer, default=0)
    online: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    address: Mapped[Address | None] = relationship(
        back_populates="node", lazy="joined", uselist=False
    )


class Address(Base):
    """One host slot of an org's prefixes: an IPv4 and an IPv6 address.

    The address of a node lives here and nowhere else. A revoked node's slot
    keeps its node_id and is reused only after released_at plus the
    quarantine, so a stale peer is never mistaken for a new device.
    """

    __tablename__ = "addresses"
    __table_args__ = (
        UniqueConstraint("org_id", "ipv4"),
        UniqueConstraint("org_id", "ipv6"),
    )

    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    host_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ipv4: Mapped[str] = mapped_column(String(15))
    ipv6: Mapped[str] = mapped_column(String(39))
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), unique=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    node: Mapped[Node | None] = relationship(back_populates="address")


class MeshChange(Base):
    """The change log: one row per peer-map change, written in the same
    transaction as the change itself. Streams are fed from here, so a node
    that missed a few versions can be sent exactly what it missed."""

    __tablename__ = "mesh_changes"

    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # "upsert" carries the peer in full; "remove" only its key.
    op: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[str] = mapped_column(String(40))
    public_key: Mapped[str] = mapped_column(String(44))
    # Serialised runmesh.v1.Peer for upserts.
    peer: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_org_created", "org_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class CoordinatorKey(Base):
    """The coordinator's long-term X25519 key pair, created on first start."""

    __tablename__ = "coordinator_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[str] = mapped_column(String(44))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class DeviceActivity(Base):
    """What happened to one node, for the device's own activity feed."""

    __tablename__ = "device_activity"
    __table_args__ = (Index("ix_activity_node_created", "node_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(500))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

"""Orgs, users and API keys: who may call the AdminService, and as what.

An API key is ``rt_live_`` plus 32 random bytes; only its SHA-256 is stored.
A fast hash is right here: the key has 256 bits of entropy, so there is
nothing for a slow hash to protect against, and every request hashes once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator import audit, ipam
from coordinator.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from coordinator.ids import new_id, utcnow
from coordinator.models import ApiKey, Org, Role, User

KEY_PREFIX = "rt_live_"
SCOPES = frozenset(
    {
        "runmesh:read",
        "runmesh:write",
        "activity:read",
        "agent:read",
        "agent:write",
        "agent:run",
        "*",
    }
)
DEFAULT_SCOPES = ("*",)
_ORG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")
# Deliberately plain: ASCII local part and domain, no quoting or brackets.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$"
)


@dataclass(frozen=True)
class Caller:
    """The authenticated principal behind one AdminService call."""

    org_id: str
    user_id: str
    key_id: str
    role: Role
    scopes: frozenset[str]
    # "user" for API keys; "system" for the operator's command line.
    actor_type: str = "user"

    def require(self, scope: str) -> None:
        if "*" not in self.scopes and scope not in self.scopes:
            raise PermissionDenied(f"this API key lacks the scope {scope!r}")

    def with_scope(self, scope: str) -> Caller:
        """The same caller allowed one more scope, for a check made on its
        behalf (activity:read implies seeing which node it is about)."""
        return dataclasses.replace(self, scopes=self.scopes | {scope})

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor(self.actor_type, self.user_id)


def operator(org_id: str) -> Caller:
    """The operator at the coordinator's command line: admin of every org."""
    return Caller(
        org_id=org_id,
        user_id="operator",
        key_id="cli",
        role=Role.ADMIN,
        scopes=frozenset({"*"}),
        actor_type="system",
    )


def find_org(session: Session, name_or_id: str) -> Org:
    org = session.scalar(
        select(Org).where((Org.name == name_or_id) | (Org.id == name_or_id))
    )
    if org is None:
        raise NotFound(f"no org named {name_or_id[:128]!r}")
    return org


def orgs_for_update(session: Session, org_ids: Iterable[str]) -> dict[str, Org]:
    """The orgs named, locked for writing until the unit of work ends.

    Whatever changes an org's map locks its row first: FOR UPDATE
    serialises one org's ``mesh_version`` and ``next_host_index`` across
    PostgreSQL replicas (SQLite's BEGIN IMMEDIATE already holds the
    database write lock). Rows are locked in id order, so two units of
    work that lock the same orgs cannot deadlock.
    """
    rows = session.scalars(
        select(Org)
        .where(Org.id.in_(sorted(set(org_ids))))
        .order_by(Org.id)
        .with_for_update()
    )
    return {org.id: org for org in rows}


def list_orgs(session: Session) -> Sequence[Org]:
    return session.scalars(select(Org).order_by(Org.created_at)).all()


def list_users(session: Session, org: Org) -> Sequence[User]:
    query = select(User).where(User.org_id == org.id).order_by(User.created_at)
    return session.scalars(query).all()


def list_keys(session: Session, org: Org) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.org_id == org.id).order_by(ApiKey.created_at)
    return session.scalars(query).unique().all()


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke an API key; it fails authentication from the next request on."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id[:64]!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            session,
            org_id=row.org_id,
            actor=audit.SYSTEM,
            action="apikey.revoked",
            target_type="apiKey",
            target_id=row.id,
        )
    return row


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_org(session: Session, name: str, ipv4_prefix_length: int = 16) -> Org:
    if not _ORG_NAME.fullmatch(name):
        raise InvalidArgument(
            "org name: 1-128 characters, letters, digits, space, '.', '_', '-'"
        )
    org = session.scalar(select(Org).where(Org.name == name))
    if org is not None:
        return org
    org = Org(
        id=new_id("org"),
        name=name,
        ipv4_prefix=ipam.choose_ipv4_prefix(session, ipv4_prefix_length),
        ipv6_prefix=ipam.random_ula_prefix(),
        mesh_version=0,
        next_host_index=1,
        created_at=utcnow(),
    )
    session.add(org)
    session.flush()
    return org


def ensure_user(session: Session, org: Org, email: str, role: Role) -> User:
    if not _EMAIL.fullmatch(email):
        raise InvalidArgument(f"not an email address: {email!r}")
    email = email.lower()
    user = session.scalar(
        select(User).where(User.org_id == org.id, User.email == email)
    )
    if user is not None:
        return user
    user = User(
        id=new_id("user"), org_id=org.id, email=email, role=role, created_at=utcnow()
    )
    session.add(user)
    session.flush()
    return user


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(set(scopes) - SCOPES)
    if unknown or not scopes:
        raise InvalidArgument(
            f"unknown scopes {unknown}; choose from {sorted(SCOPES)}"
            if unknown
            else "at least one scope is required"
        )
    return scopes


def create_api_key(
    session: Session, user: User, role: Role, scopes: tuple[str, ...]
) -> tuple[ApiKey, str]:
    """A new key for ``user``; returns the row and the key, shown only now."""
    if role == Role.ADMIN and user.role != Role.ADMIN:
        raise InvalidArgument("a member cannot hold an admin key")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        org_id=user.org_id,
        user_id=user.id,
        key_hash=hash_key(key),
        display_prefix=key[: len(KEY_PREFIX) + 4],
        role=role,
        scopes=list(scopes),
        created_at=utcnow(),
    )
    session.add(row)
    audit.record(
        session,
        org_id=user.org_id,
        actor=audit.SYSTEM,
        action="apikey.created",
        target_type="apiKey",
        target_id=row.id,
        attributes={"userId": user.id, "role": str(role), "scopes": list(scopes)},
    )
    session.flush()
    return row, key


def count_keys(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)


def authenticate(session: Session, key: str | None) -> Caller:
    if not key:
        raise Unauthenticated("an API key is required (X-API-Key or Bearer)")
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise Unauthenticated("the API key is not valid")
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("the API key is not valid")
    return Caller(
        org_id=row.org_id,
        user_id=row.user_id,
        key_id=row.id,
        role=Role(row.role),
        scopes=frozenset(row.scopes),
    )

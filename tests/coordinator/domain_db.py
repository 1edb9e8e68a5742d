"""Steps the coordinator's domain tests share, each its own committed transaction.

Every helper calls the real domain functions against the real database; a
step that fails rolls its transaction back exactly as the servicers do.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nacl.public import PrivateKey
from sqlalchemy.orm import Session

from coordinator import accounts, linking, nodes, schema
from coordinator.accounts import Caller
from coordinator.db import open_database as open_url
from coordinator.models import LinkRequest, Node, Org, Role
from coordinator.settings import Settings
from coordinator.store import Database

T = TypeVar("T")
Sessions = Database


async def open_database(path: Path) -> Database:
    database = open_url(f"sqlite:///{path}")
    await schema.upgrade(database.engine)
    return database


async def in_transaction(sessions: Sessions, work: Callable[[Session], T]) -> T:
    """``work`` in one transaction on the database's thread, no retry."""

    def call() -> T:
        with sessions.sessions() as session, session.begin():
            return work(session)

    return await sessions.run(call)


def new_public_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


async def new_caller(
    sessions: Sessions,
    org: str = "acme",
    email: str = "admin@acme.test",
    scopes: tuple[str, ...] = ("*",),
    ipv4_prefix_length: int = 16,
) -> Caller:
    """An org (created when missing), a user, an API key, authenticated."""

    def create(session: Session) -> str:
        row = accounts.ensure_org(session, org, ipv4_prefix_length=ipv4_prefix_length)
        user = accounts.ensure_user(session, row, email, Role.ADMIN)
        _, key = accounts.create_api_key(session, user, Role.ADMIN, scopes)
        return key

    key = await in_transaction(sessions, create)
    with sessions.sessions() as session:
        return accounts.authenticate(session, key)


async def start(
    sessions: Sessions,
    settings: Settings,
    public_key: str | None = None,
    label: str = "",
) -> LinkRequest:
    def work(session: Session) -> LinkRequest:
        return linking.start_link(
            session,
            settings,
            public_key=public_key or new_public_key(),
            device_label=label,
            os="linux",
            app_version="0.1.0",
            hostname="host",
            client_metadata={},
        )

    return await in_transaction(sessions, work)


async def poll(
    sessions: Sessions, settings: Settings, request: LinkRequest
) -> LinkRequest:
    def work(session: Session) -> LinkRequest:
        return linking.poll_link(
            session, settings, code=request.code, public_key=request.public_key
        )

    return await in_transaction(sessions, work)


async def approve(
    sessions: Sessions, settings: Settings, caller: Caller, code: str, name: str = ""
) -> Node:
    def work(session: Session) -> Node:
        return linking.approve_link(session, settings, caller, code=code, name=name)

    return await in_transaction(sessions, work)


async def link_node(sessions: Sessions, settings: Settings, caller: Caller) -> Node:
    request = await start(sessions, settings)
    return await approve(sessions, settings, caller, request.code)


async def revoke(sessions: Sessions, caller: Caller, node_id: str) -> Node:
    def work(session: Session) -> Node:
        return nodes.revoke_node(session, caller, node_id)

    return await in_transaction(sessions, work)


async def load(sessions: Sessions, model: type[T], key: object) -> T:
    with sessions.sessions() as session:
        row = session.get(model, key)
        assert row is not None, f"no {model.__name__} {key!r}"
        return row


async def load_org(sessions: Sessions, org_id: str) -> Org:
    return await load(sessions, Org, org_id)


async def create_org_key(db_url: str, org: str, email: str) -> str:
    """An admin API key of a new org, written into a running coordinator's DB.

    The same domain calls as ``runmesh-coordinator keys create``, without the
    second of process start-up per key.
    """
    sessions = open_url(db_url)
    try:

        def create(session: Session) -> str:
            row = accounts.ensure_org(session, org)
            user = accounts.ensure_user(session, row, email, Role.ADMIN)
            _, key = accounts.create_api_key(session, user, Role.ADMIN, ("*",))
            return key

        return await in_transaction(sessions, create)
    finally:
        await sessions.close()

"""Approvals written together: each succeeds or fails alone, nothing collides.

``linking.approve_links`` is what one batch of ``approvals.ApprovalQueue``
runs; these tests give it batches a real load could produce, on the real
(migrated SQLite) database, and check what was committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from domain_db import (
    Sessions,
    in_transaction,
    link_node,
    load,
    new_caller,
    revoke,
    start,
)
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from coordinator import accounts, linking
from coordinator.accounts import Caller
from coordinator.approvals import ApprovalQueue, Request
from coordinator.errors import (
    Conflict,
    CoordinatorError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from coordinator.ids import utcnow
from coordinator.models import (
    Address,
    AuditEvent,
    LinkRequest,
    LinkState,
    Node,
    Role,
)
from coordinator.settings import Settings

pytestmark = pytest.mark.anyio

SETTINGS = Settings()


async def approve_together(
    sessions: Sessions, caller: Caller, codes_and_names: list[tuple[str, str]]
) -> list[Node | CoordinatorError]:
    approvals = [linking.Approval(caller, code, name) for code, name in codes_and_names]

    def work(session: Session) -> list[Node | CoordinatorError]:
        return linking.approve_links(session, SETTINGS, approvals)

    return await in_transaction(sessions, work)


def active_nodes(sessions: Sessions, org_id: str) -> list[Node]:
    with sessions.sessions() as session:
        return list(
            session.scalars(
                select(Node).where(Node.org_id == org_id, Node.revoked_at.is_(None))
            )
        )


async def test_one_batch_gives_distinct_names_addresses_and_versions(
    sessions: Sessions,
) -> None:
    caller = await new_caller(sessions)
    requests = [await start(sessions, SETTINGS, label="laptop") for _ in range(5)]

    outcomes = await approve_together(
        sessions, caller, [(r.code, "") for r in requests]
    )

    assert all(isinstance(o, Node) for o in outcomes), outcomes
    nodes = active_nodes(sessions, caller.org_id)
    assert sorted(n.name for n in nodes) == [
        "laptop",
        "laptop-2",
        "laptop-3",
        "laptop-4",
        "laptop-5",
    ]
    assert len({n.address.ipv4 for n in nodes if n.address}) == 5
    with sessions.sessions() as session:
        approved = session.scalars(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "device.link.approved")
        ).one()
    assert approved == 5


async def test_a_bad_approval_in_a_batch_fails_alone(sessions: Sessions) -> None:
    caller = await new_caller(sessions)
    first = await start(sessions, SETTINGS, label="a")
    second = await start(sessions, SETTINGS, label="b")

    outcomes = await approve_together(
        sessions,
        caller,
        [
            (first.code, "same"),
            ("ZZZZZZ", ""),  # no such code
            (second.code, "same"),  # the name the first just took
            (first.code, ""),  # the code the first just used
        ],
    )

    assert isinstance(outcomes[0], Node) and outcomes[0].name == "same"
    assert isinstance(outcomes[1], NotFound)
    assert isinstance(outcomes[2], Conflict) and "named 'same'" in outcomes[2].message
    assert isinstance(outcomes[3], Conflict) and "already approved" in str(outcomes[3])
    assert [n.name for n in active_nodes(sessions, caller.org_id)] == ["same"]
    refused = await load(sessions, LinkRequest, second.id)
    assert refused.state == LinkState.PENDING and refused.node_id is None


async def test_two_codes_of_one_key_in_a_batch_give_one_node(
    sessions: Sessions,
) -> None:
    caller = await new_caller(sessions)
    # Two pending requests can share a key only if they come from different
    # starts; the newer supersedes the older, so make them by hand.
    older = await start(sessions, SETTINGS, label="twin")
    newer = await start(sessions, SETTINGS, label="twin")

    def reopen(session: Session) -> None:
        session.execute(
            update(LinkRequest)
            .where(LinkRequest.id == older.id)
            .values(state=LinkState.PENDING, public_key=newer.public_key)
        )

    await in_transaction(sessions, reopen)

    outcomes = await approve_together(
        sessions, caller, [(older.code, ""), (newer.code, "")]
    )

    assert isinstance(outcomes[0], Node)
    assert isinstance(outcomes[1], Conflict) and "public key" in str(outcomes[1])
    assert len(active_nodes(sessions, caller.org_id)) == 1


async def test_a_batch_never_reuses_one_released_slot_twice(
    sessions: Sessions,
) -> None:
    caller = await new_caller(
        sessions, org="tiny", email="admin@tiny.test", ipv4_prefix_length=29
    )
    nodes = [await link_node(sessions, SETTINGS, caller) for _ in range(6)]
    for gone in nodes[:2]:
        await revoke(sessions, caller, gone.id)

    def age(session: Session) -> None:
        session.execute(
            update(Address)
            .where(Address.node_id.in_([n.id for n in nodes[:2]]))
            .values(released_at=utcnow() - dt.timedelta(days=2))
        )

    await in_transaction(sessions, age)
    waiting = [await start(sessions, SETTINGS, label=f"new{i}") for i in range(3)]

    outcomes = await approve_together(sessions, caller, [(r.code, "") for r in waiting])

    assert isinstance(outcomes[0], Node) and isinstance(outcomes[1], Node)
    assert isinstance(outcomes[2], ResourceExhausted)
    reused = {o.address.ipv4 for o in outcomes[:2] if isinstance(o, Node) and o.address}
    assert reused == {n.address.ipv4 for n in nodes[:2] if n.address}
    with sessions.sessions() as session:
        slots = session.scalars(
            select(Address.node_id).where(Address.org_id == caller.org_id)
        ).all()
    assert len(slots) == len(set(slots)) == 6


async def test_the_queue_answers_each_caller_with_its_own_outcome(
    sessions: Sessions,
) -> None:
    def create_key(session: Session) -> str:
        org = accounts.ensure_org(session, "queue")
        user = accounts.ensure_user(session, org, "a@queue.test", Role.ADMIN)
        return accounts.create_api_key(session, user, Role.ADMIN, ("*",))[1]

    key = await in_transaction(sessions, create_key)
    requests = [await start(sessions, SETTINGS, label="q") for _ in range(20)]
    notified: list[str] = []
    queue = ApprovalQueue(sessions, SETTINGS, notified.append)
    try:
        calls = [queue.approve(Request(key, r.code, "")) for r in requests]
        calls.append(queue.approve(Request("rm_not-a-key", requests[0].code, "")))
        calls.append(queue.approve(Request(key, requests[0].code, "")))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await queue.close()

    nodes = [o for o in outcomes[:20] if isinstance(o, Node)]
    assert len(nodes) == 20
    assert len({n.name for n in nodes}) == 20
    assert isinstance(outcomes[20], Unauthenticated)
    assert isinstance(outcomes[21], Conflict)
    assert notified and set(notified) == {nodes[0].org_id}


async def test_a_batch_that_cannot_commit_is_written_one_by_one(
    sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    """One approval the database refuses only at commit (here a trigger, as
    a constraint no check foresaw would) must not take the batch down."""

    def create_key(session: Session) -> str:
        org = accounts.ensure_org(session, "poison")
        user = accounts.ensure_user(session, org, "a@poison.test", Role.ADMIN)
        return accounts.create_api_key(session, user, Role.ADMIN, ("*",))[1]

    def poison(session: Session) -> None:
        session.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON nodes "
                "WHEN NEW.name = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )

    key = await in_transaction(sessions, create_key)
    await in_transaction(sessions, poison)
    requests = [await start(sessions, SETTINGS, label=f"ok{i}") for i in range(6)]
    bad = await start(sessions, SETTINGS, label="bad")
    queue = ApprovalQueue(sessions, SETTINGS, lambda org_id: None)
    try:
        calls = [queue.approve(Request(key, r.code, "")) for r in requests]
        calls.insert(3, queue.approve(Request(key, bad.code, "poison")))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await queue.close()

    assert "a batch of 7 approvals failed" in caplog.text
    assert isinstance(outcomes[3], Conflict), outcomes[3]
    good = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, Node) for o in good), good
    with sessions.sessions() as session:
        names = set(session.scalars(select(Node.name)))
    assert names == {f"ok{i}" for i in range(6)}

"""Reading the audit log and device activity, newest first, page by page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from coordinator.accounts import Caller
from coordinator.errors import InvalidArgument
from coordinator.models import AuditEvent, DeviceActivity
from coordinator.paging import Cursors, check_limit

Row = TypeVar("Row", AuditEvent, DeviceActivity)


@dataclass(frozen=True)
class Page(Generic[Row]):
    items: Sequence[Row]
    next_cursor: str
    has_more: bool


@dataclass(frozen=True)
class Window:
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def check(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise InvalidArgument("since must not be after until")


def audit_events(
    session: Session,
    caller: Caller,
    cursors: Cursors,
    *,
    limit: int,
    cursor: str,
    window: Window,
    action: str,
) -> Page[AuditEvent]:
    caller.require("runmesh:read")
    if len(action) > 64:
        raise InvalidArgument("action is longer than 64 characters")
    query = select(AuditEvent).where(AuditEvent.org_id == caller.org_id)
    if action:
        query = query.where(AuditEvent.action == action)
    scope = f"audit:{caller.org_id}:{action}:{window!r}"
    return _newest_first(
        session, cursors, scope, AuditEvent, query, limit, cursor, window
    )


def device_activity(
    session: Session,
    caller: Caller,
    cursors: Cursors,
    *,
    node_id: str,
    limit: int,
    cursor: str,
    window: Window,
) -> Page[DeviceActivity]:
    caller.require("activity:read")
    query = select(DeviceActivity).where(
        DeviceActivity.org_id == caller.org_id, DeviceActivity.node_id == node_id
    )
    scope = f"activity:{caller.org_id}:{node_id}:{window!r}"
    return _newest_first(
        session, cursors, scope, DeviceActivity, query, limit, cursor, window
    )


def _newest_first(
    session: Session,
    cursors: Cursors,
    scope: str,
    model: type[Row],
    query: Select[Row],
    limit: int,
    cursor: str,
    window: Window,
) -> Page[Row]:
    limit = check_limit(limit)
    window.check()
    if window.since:
        query = query.where(model.created_at >= window.since)
    if window.until:
        query = query.where(model.created_at <= window.until)
    if cursor:
        created_at, last_id = cursors.decode(scope, cursor)
        query = query.where(
            or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < last_id),
            )
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = session.scalars(query).all()
    has_more = len(rows) > limit
    page = list(rows[:limit])
    next_cursor = (
        cursors.encode(scope, page[-1].created_at, page[-1].id) if has_more else ""
    )
    return Page(items=page, next_cursor=next_cursor, has_more=has_more)

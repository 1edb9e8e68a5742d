"""Periodic clean-up of rows that only grow: the change log and stale links.

The change log is kept for ``change_retention``: a node away for longer
gets a full map instead of a resume, which is always correct, just larger.
Link requests that were never approved are deleted a day after they
expired; approved ones stay as the record of how a node joined.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy import delete
from sqlalchemy.orm import Session

from coordinator.ids import utcnow
from coordinator.models import LinkRequest, LinkState, MeshChange
from coordinator.store import Database, in_transaction

log = logging.getLogger(__name__)

STALE_LINK_AGE = dt.timedelta(days=1)


async def sweep(sessions: Database, change_retention: dt.timedelta) -> tuple[int, int]:
    """Delete what is past keeping; returns (changes, link requests) deleted."""
    now = utcnow()

    def work(session: Session) -> tuple[int, int]:
        changes = session.execute(
            delete(MeshChange).where(MeshChange.created_at < now - change_retention)
        )
        links = session.execute(
            delete(LinkRequest).where(
                LinkRequest.state != LinkState.APPROVED,
                LinkRequest.expires_at < now - STALE_LINK_AGE,
            )
        )
        return changes.rowcount or 0, links.rowcount or 0  # type: ignore[attr-defined]

    return await in_transaction(sessions, work)


async def sweep_forever(
    sessions: Database,
    change_retention: dt.timedelta,
    every: float = 600.0,
) -> None:
    while True:
        try:
            changes, links = await sweep(sessions, change_retention)
            if changes or links:
                log.info(
                    "housekeeping deleted %d old changes and %d stale link requests",
                    changes,
                    links,
                )
        except Exception:
            log.exception("housekeeping failed; trying again later")
        await asyncio.sleep(every)

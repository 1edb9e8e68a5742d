"""Transactions with retry: one unit of work, committed whole or not at all.

A unit of work may lose a race in the database (two replicas approving in
one org, SQLite busy): the unique constraints refuse the loser, and the
whole unit runs again from the start with fresh reads. Nothing of a failed
attempt survives, because it is rolled back before the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from coordinator.errors import Conflict

T = TypeVar("T")

# SQLite admits one writer at a time. Writers of one process that race for
# the lock are put to sleep by SQLite's busy handler, in steps growing to
# 100 ms, so a burst of concurrent writes crawls. Queueing them on an
# asyncio lock first lets each begin the moment the previous one commits.
_write_locks: dict[int, asyncio.Lock] = {}


def serialise_writes(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Queue this process's units of work on ``sessions`` one at a time."""
    _write_locks[id(sessions)] = asyncio.Lock()


async def in_transaction(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    attempts: int = 4,
) -> T:
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((IntegrityError, OperationalError)),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        ):
            with attempt:
                lock = _write_locks.get(id(sessions))
                async with contextlib.AsyncExitStack() as stack:
                    if lock is not None:
                        await stack.enter_async_context(lock)
                    session = await stack.enter_async_context(sessions())
                    await stack.enter_async_context(session.begin())
                    return await work(session)
    except IntegrityError:
        raise Conflict("the change conflicts with another one; try again") from None
    raise AssertionError("unreachable: tenacity either returns or raises")

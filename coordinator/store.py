"""Transactions with retry: one unit of work, committed whole or not at all.

A unit of work may lose a race in the database (two replicas approving in
one org, SQLite busy): the unique constraints refuse the loser, and the
whole unit runs again from the start with fresh reads. Nothing of a failed
attempt survives, because it is rolled back before the retry.
"""

from __future__ import annotations

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
                async with sessions() as session, session.begin():
                    return await work(session)
    except IntegrityError:
        raise Conflict("the change conflicts with another one; try again") from None
    raise AssertionError("unreachable: tenacity either returns or raises")

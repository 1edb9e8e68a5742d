"""Units of work: sync SQLAlchemy sessions on worker threads of their own.

Each unit of work is one plain function of a ``Session``, run whole on a
database thread: one hop from the event loop per unit, not one per
statement. (Measured here: a SELECT through an async driver cost 1.2 ms of
event-loop round trips; the same SELECT in a sync session, 0.2 ms.)

A unit of work may lose a race in the database (two replicas approving in
one org, SQLite busy): the unique constraints refuse the loser, and the
whole unit runs again from the start with fresh reads. Nothing of a failed
attempt survives, because it is rolled back before the retry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from coordinator.errors import Conflict

T = TypeVar("T")


class Database:
    """One engine and the threads its units of work run on.

    SQLite admits one writer at a time, so its writers get one thread:
    this process's writes queue there in order instead of sleeping in
    SQLite's busy handler (whose steps grow to 100 ms).
    """

    def __init__(self, engine: Engine, threads: int, name: str) -> None:
        self.engine = engine
        # expire_on_commit=False: objects are read after commit, on the
        # event loop, to build replies; expiring them would make that a
        # query from the wrong thread.
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix=f"db-{name}"
        )
        # Units of work handed to the threads and not yet returned.
        self.in_flight = 0

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one of this database's threads."""
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()


async def in_transaction(
    database: Database, work: Callable[[Session], T], attempts: int = 4
) -> T:
    """``work(session)`` in one transaction, committed whole or retried."""
    return await database.run(lambda: _with_retry(database, work, attempts))


async def read(database: Database, work: Callable[[Session], T]) -> T:
    """``work(session)`` in one read transaction: one consistent snapshot."""

    def call() -> T:
        with database.sessions() as session, session.begin():
            return work(session)

    return await database.run(call)


def _with_retry(database: Database, work: Callable[[Session], T], attempts: int) -> T:
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type((IntegrityError, OperationalError)),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        ):
            with attempt, database.sessions() as session, session.begin():
                return work(session)
    except IntegrityError:
        raise Conflict("the change conflicts with another one; try again") from None
    raise AssertionError("unreachable: tenacity either returns or raises")

"""Engines and their Databases (worker threads) for SQLite (embedded) and PostgreSQL.

SQLite: pysqlite's own transaction handling is turned off and every
transaction starts with ``BEGIN IMMEDIATE``. A read-then-write transaction
that began as a plain ``BEGIN`` can fail at once with "database is locked"
when another connection committed in between, whatever the busy timeout;
taking the write lock up front makes writers queue instead.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url

from coordinator.errors import InvalidArgument
from coordinator.store import Database

DEFAULT_DB_URL = "sqlite:///var/runmesh.db"


def driver_url(raw: str) -> URL:
    """A SQLAlchemy URL an operator typed, with the driver RunMesh uses."""
    try:
        url = make_url(raw)
    except Exception:
        raise InvalidArgument(f"--db: not a SQLAlchemy URL: {raw!r}") from None
    if url.drivername in ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"):
        return url.set(drivername="sqlite+pysqlite")
    if url.drivername in ("postgresql", "postgresql+psycopg", "postgresql+asyncpg"):
        return url.set(drivername="postgresql+psycopg")
    raise InvalidArgument(
        f"--db: unsupported database {url.drivername!r}; "
        "use sqlite:///PATH or postgresql+psycopg://…"
    )


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


# Threads per database. Readers mostly wait in SQLite or PostgreSQL with
# the GIL released; a few let a slow read not hold up the others.
READER_THREADS = 4
POSTGRES_WRITER_THREADS = 4


def create_engine(raw_url: str, *, for_writes: bool = True) -> Engine:
    """An engine for writers, or (``for_writes=False``) for readers.

    On SQLite readers begin with a plain deferred ``BEGIN``: in WAL mode
    they then read a snapshot without queueing behind writers.
    """
    url = driver_url(raw_url)
    if not is_sqlite(url):
        return sqlalchemy.create_engine(url, pool_pre_ping=True)

    # A connection is used by one thread at a time, but not always the
    # thread that opened it (the pool hands it to whichever asks).
    engine = sqlalchemy.create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}
    )
    _take_over_sqlite_transactions(engine, "BEGIN IMMEDIATE" if for_writes else "BEGIN")
    return engine


def open_database(raw_url: str, *, for_writes: bool = True) -> Database:
    """The engine for ``raw_url`` with its worker threads."""
    engine = create_engine(raw_url, for_writes=for_writes)
    if not for_writes:
        threads = READER_THREADS
    elif is_sqlite(engine.url):
        threads = 1  # one writer at a time: see coordinator.store.Database
    else:
        threads = POSTGRES_WRITER_THREADS
    return Database(engine, threads, "writer" if for_writes else "reader")


def _take_over_sqlite_transactions(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own BEGIN; we issue ours below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

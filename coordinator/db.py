"""Engine and sessions for SQLite (embedded) and PostgreSQL.

SQLite: pysqlite's own transaction handling is turned off and every
transaction starts with ``BEGIN IMMEDIATE``. A read-then-write transaction
that began as a plain ``BEGIN`` can fail at once with "database is locked"
when another connection committed in between, whatever the busy timeout;
taking the write lock up front makes writers queue instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from coordinator.errors import InvalidArgument

DEFAULT_DB_URL = "sqlite:///var/runmesh.db"


def async_url(raw: str) -> URL:
    """The async-driver form of a SQLAlchemy URL an operator typed."""
    try:
        url = make_url(raw)
    except Exception:
        raise InvalidArgument(f"--db: not a SQLAlchemy URL: {raw!r}") from None
    if url.drivername in ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"):
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in ("postgresql", "postgresql+psycopg", "postgresql+asyncpg"):
        return url.set(drivername="postgresql+psycopg")
    raise InvalidArgument(
        f"--db: unsupported database {url.drivername!r}; "
        "use sqlite:///PATH or postgresql+psycopg://…"
    )


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_engine(raw_url: str, *, for_writes: bool = True) -> AsyncEngine:
    """An engine for writers, or (``for_writes=False``) for readers.

    On SQLite readers begin with a plain deferred ``BEGIN``: in WAL mode
    they then read a snapshot without queueing behind writers.
    """
    url = async_url(raw_url)
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True)

    engine = create_async_engine(url, connect_args={"timeout": 30})
    _take_over_sqlite_transactions(engine, "BEGIN IMMEDIATE" if for_writes else "BEGIN")
    return engine


def _take_over_sqlite_transactions(engine: AsyncEngine, begin: str) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own BEGIN; we issue ours below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects are read after commit to build replies;
    # expiring them would trigger implicit IO outside the greenlet.
    return async_sessionmaker(engine, expire_on_commit=False)

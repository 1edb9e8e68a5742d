"""What every ``runmesh-coordinator`` command shares: the --db option, one
way to fail, running async work, and output as a table or as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import alembic.util.exc
import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from coordinator import db, schema
from coordinator.errors import CoordinatorError
from coordinator.store import in_transaction, read

T = TypeVar("T")
log = logging.getLogger(__name__)

DB_OPTION = click.option(
    "--db",
    "db_url",
    envvar="RUNMESH_DB",
    show_envvar=True,
    default=db.DEFAULT_DB_URL,
    show_default=True,
    help="SQLAlchemy URL: sqlite:///PATH (embedded) or postgresql+psycopg://…",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(message: str) -> NoReturn:
    click.echo(f"runmesh-coordinator: {message}", err=True)
    sys.exit(2)


def sqlite_file(db_url: str) -> Path | None:
    """The file of an embedded (SQLite) database; None for a server's."""
    url = db.driver_url(db_url)
    if db.is_sqlite(url) and url.database and url.database != ":memory:":
        return Path(url.database)
    return None


def create_if_missing(db_url: str) -> Path | None:
    """Make room for an embedded database: its directory, if missing.

    Returns the database's file if this command is the one creating it, and
    says so on standard error, so that a mistyped --db does not pass unseen.
    """
    path = sqlite_file(db_url)
    if path is None:
        return None
    new = not path.exists()
    if new:
        click.echo(f"runmesh-coordinator: creating a new database at {path}", err=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path if new else None


def remove_database(path: Path) -> None:
    """Remove an embedded database this command created and then failed in,
    so that no empty database is left behind by a write that did nothing."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def require_existing(db_url: str) -> None:
    """Refuse an embedded database that does not exist yet.

    A listing must not create one: an operator who mistyped --db would be
    shown an empty org, and the next write would go to the new file.
    """
    path = sqlite_file(db_url)
    if path is not None and not path.exists():
        raise CoordinatorError(
            f"no database at {path}; check --db (the coordinator creates its "
            "database when it first starts, and so does a command that writes)"
        )


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's work; any failure becomes one line and exit 2."""
    try:
        return asyncio.run(work())
    except CoordinatorError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(str(exc))
    except alembic.util.exc.CommandError as exc:
        fail(f"migration: {exc}")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(f"database: {str(cause).splitlines()[0][:300]}")
    except Exception as exc:
        # Never a traceback at the operator's terminal; the details go to
        # the log (visible with --log-level debug).
        log.debug("unexpected error", exc_info=True)
        fail(f"unexpected error ({type(exc).__name__}): {str(exc)[:300]}")


async def require_schema(engine: Engine, db_url: str) -> None:
    if db.is_sqlite(db.driver_url(db_url)):
        await schema.upgrade(engine)
    elif not await schema.is_current(engine):
        raise CoordinatorError("the database schema is not current; run migrate")


def in_database(
    db_url: str, work: Callable[[Session], T]
) -> Callable[[], Coroutine[Any, Any, T]]:
    """One unit of work against the database at ``db_url``, for ``run``."""

    async def once() -> T:
        database = db.open_database(db_url)
        try:
            await require_schema(database.engine, db_url)
            return await in_transaction(database, work)
        finally:
            await database.close()

    async def go() -> T:
        created = create_if_missing(db_url)
        try:
            return await once()
        except BaseException:
            if created is not None:
                remove_database(created)
            raise

    return go


def from_database(
    db_url: str, look: Callable[[Session], T]
) -> Callable[[], Coroutine[Any, Any, T]]:
    """One read of the database at ``db_url``, for ``run``.

    Reads never take SQLite's write lock (a running coordinator's writes
    would queue behind an operator's listing); only a schema that needs
    migrating is upgraded first, through a writer.
    """

    async def go() -> T:
        require_existing(db_url)
        reader = db.open_database(db_url, for_writes=False)
        try:
            if not await schema.is_current(reader.engine):
                writer = db.open_database(db_url)
                try:
                    await require_schema(writer.engine, db_url)
                finally:
                    await writer.close()
            return await read(reader, look)
        finally:
            await reader.close()

    return go


def emit(rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    """Rows as a JSON array, or as a table with the given columns."""
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    cells = [list(columns)] + [
        ["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo(
            "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        )


def emit_one(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(row, indent=2, default=str))
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")

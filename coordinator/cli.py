"""``runmesh-coordinator``: serve the mesh and administer its database."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import alembic.util.exc
import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from coordinator import accounts, db, schema, server
from coordinator.errors import CoordinatorError
from coordinator.hub import Coalescing
from coordinator.models import Role
from coordinator.presence import PresenceTiming
from coordinator.ratelimit import Policy
from coordinator.runtime import open_runtime
from coordinator.settings import Settings
from coordinator.store import in_transaction

T = TypeVar("T")

DB_OPTION = click.option(
    "--db",
    "db_url",
    show_envvar=True,
    envvar="RUNMESH_DB",
    default=db.DEFAULT_DB_URL,
    show_default=True,
    help="SQLAlchemy URL: sqlite:///PATH (embedded) or postgresql+psycopg://…",
)


def _fail(message: str) -> None:
    click.echo(f"runmesh-coordinator: {message}", err=True)
    sys.exit(2)


def _prepare_sqlite_dir(db_url: str) -> None:
    url = db.async_url(db_url)
    if db.is_sqlite(url) and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's work; any failure becomes one line and exit 2."""
    try:
        return asyncio.run(work())
    except CoordinatorError as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(str(exc))
    except alembic.util.exc.CommandError as exc:
        _fail(f"migration: {exc}")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        _fail(f"database: {str(cause).splitlines()[0][:300]}")
    raise AssertionError("unreachable")


@click.group()
@click.option(
    "--log-level",
    show_envvar=True,
    envvar="RUNMESH_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def main(log_level: str) -> None:
    """The RunMesh coordinator: owner of all mesh state, served over gRPC."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    # Alembic narrates every migration step at INFO; `migrate` prints its
    # own summary, and `serve` logs once that the schema is current.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _listen_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return value


@main.command()
@DB_OPTION
@click.option(
    "--listen",
    show_envvar=True,
    envvar="RUNMESH_LISTEN",
    default="127.0.0.1:50443",
    show_default=True,
    callback=_listen_address,
    help="gRPC listen address HOST:PORT.",
)
@click.option(
    "--advertise",
    show_envvar=True,
    envvar="RUNMESH_ADVERTISE",
    default=None,
    callback=lambda c, p, v: v if v is None else _listen_address(c, p, v),
    help="HOST:PORT devices are told to open Sync on (default: --listen).",
)
@click.option(
    "--approve-url",
    show_envvar=True,
    envvar="RUNMESH_APPROVE_URL",
    default=Settings.approve_url,
    show_default=True,
    help="Base URL of the approval page that link/start returns.",
)
@click.option(
    "--link-ttl",
    show_envvar=True,
    envvar="RUNMESH_LINK_TTL",
    type=click.IntRange(10, 86400),
    default=600,
    show_default=True,
    help="Seconds a link code stays valid.",
)
@click.option(
    "--link-interval",
    show_envvar=True,
    envvar="RUNMESH_LINK_INTERVAL",
    type=click.IntRange(1, 60),
    default=5,
    show_default=True,
    help="Seconds a device must wait between polls.",
)
@click.option(
    "--link-starts-per-minute",
    show_envvar=True,
    envvar="RUNMESH_LINK_STARTS_PER_MINUTE",
    type=click.IntRange(1, 1_000_000),
    default=Policy.starts_per_source,
    show_default=True,
    help="Link starts allowed per client address per minute.",
)
@click.option(
    "--failed-approvals-per-minute",
    show_envvar=True,
    envvar="RUNMESH_FAILED_APPROVALS_PER_MINUTE",
    type=click.IntRange(1, 1_000_000),
    default=Policy.approvals_per_key,
    show_default=True,
    help="Failed approvals allowed per API key per minute (3x per address).",
)
@click.option(
    "--coalesce-ms",
    show_envvar=True,
    envvar="RUNMESH_COALESCE_MS",
    type=click.IntRange(0, 5000),
    default=20,
    show_default=True,
    help="Deliver changes once the log was quiet this long (max 12x later).",
)
@click.option(
    "--presence-grace",
    show_envvar=True,
    envvar="RUNMESH_PRESENCE_GRACE",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a node whose stream ended stays online, awaiting a reconnect.",
)
@click.option(
    "--change-retention",
    show_envvar=True,
    envvar="RUNMESH_CHANGE_RETENTION",
    type=click.IntRange(60, 90 * 86400),
    default=86400,
    show_default=True,
    help="Seconds the change log keeps changes (how far back a node can resume).",
)
@click.option(
    "--keepalive",
    show_envvar=True,
    envvar="RUNMESH_KEEPALIVE",
    type=click.FloatRange(0.5, 600),
    default=15.0,
    show_default=True,
    help="Seconds between keepalives on each Sync stream.",
)
def serve(
    db_url: str,
    listen: str,
    advertise: str | None,
    approve_url: str,
    link_ttl: int,
    link_interval: int,
    link_starts_per_minute: int,
    failed_approvals_per_minute: int,
    coalesce_ms: int,
    presence_grace: float,
    change_retention: int,
    keepalive: float,
) -> None:
    """Run the coordinator's gRPC server (migrates an SQLite database first)."""
    settings = Settings(
        advertise_target=advertise or listen,
        approve_url=approve_url,
        link_ttl=dt.timedelta(seconds=link_ttl),
        link_interval=link_interval,
        keepalive_interval=keepalive,
        coalescing=Coalescing(
            quiet=coalesce_ms / 1000, max_delay=max(0.05, 12 * coalesce_ms / 1000)
        ),
        presence=PresenceTiming(grace=presence_grace),
        change_retention=dt.timedelta(seconds=change_retention),
        limits=Policy(
            approvals_per_key=failed_approvals_per_minute,
            approvals_per_source=3 * failed_approvals_per_minute,
            polls_per_source=max(30, 3 * failed_approvals_per_minute),
            starts_per_source=link_starts_per_minute,
        ),
    )

    async def run() -> None:
        _prepare_sqlite_dir(db_url)
        is_sqlite = db.is_sqlite(db.async_url(db_url))
        try:
            runtime = await open_runtime(db_url, settings, migrate=is_sqlite)
        except RuntimeError as exc:
            _fail(str(exc))
        try:
            await server.serve(runtime, listen)
        except RuntimeError as exc:
            await runtime.close()
            _fail(f"cannot listen on {listen}: {exc}")

    _run(run)


@main.group()
def keys() -> None:
    """Create API keys."""


@keys.command("create")
@DB_OPTION
@click.option(
    "--org",
    envvar="RUNMESH_ORG",
    show_envvar=True,
    required=True,
    help="Org name; created when missing.",
)
@click.option(
    "--user",
    "email",
    envvar="RUNMESH_USER",
    show_envvar=True,
    required=True,
    help="User email; created when missing.",
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.ADMIN.value,
    show_default=True,
)
@click.option(
    "--scopes",
    default="*",
    show_default=True,
    help="Comma-separated scopes, e.g. runmesh:read,runmesh:write.",
)
@click.option(
    "--if-none",
    is_flag=True,
    help="Create the key only if the database holds no API key at all.",
)
def keys_create(
    db_url: str, org: str, email: str, role: str, scopes: str, if_none: bool
) -> None:
    """Create an API key and print it, alone, on standard output.

    The org and the user are created when missing. The key is shown only
    now; the database keeps a hash.
    """

    async def run() -> str | None:
        wanted = accounts.parse_scopes(scopes)
        _prepare_sqlite_dir(db_url)
        engine = db.create_engine(db_url)
        try:
            await _require_schema(engine, db_url)
            sessions = db.session_factory(engine)

            async def work(session: AsyncSession) -> str | None:
                if if_none and await accounts.count_keys(session) > 0:
                    return None
                the_org = await accounts.ensure_org(session, org)
                user = await accounts.ensure_user(session, the_org, email, Role(role))
                _, key = await accounts.create_api_key(
                    session, user, Role(role), wanted
                )
                return key

            return await in_transaction(sessions, work)
        finally:
            await engine.dispose()

    key = _run(run)
    if key is None:
        click.echo("an API key already exists; no new key created", err=True)
        return
    click.echo(key)


async def _require_schema(engine: AsyncEngine, db_url: str) -> None:
    if db.is_sqlite(make_url(str(db.async_url(db_url)))):
        await schema.upgrade(engine)
    elif not await schema.is_current(engine):
        raise CoordinatorError("the database schema is not current; run migrate")


@main.command()
@DB_OPTION
@click.argument("revision", default="head")
@click.option("--downgrade", is_flag=True, help="Go down to REVISION instead.")
def migrate(db_url: str, revision: str, downgrade: bool) -> None:
    """Upgrade (or downgrade) the database schema to REVISION (default: head)."""

    async def run() -> str | None:
        _prepare_sqlite_dir(db_url)
        engine = db.create_engine(db_url)
        try:
            if downgrade:
                await schema.downgrade(engine, revision)
            else:
                await schema.upgrade(engine, revision)
            return await schema.current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(f"schema at revision {_run(run) or 'base'}")

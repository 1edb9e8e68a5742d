"""The operator's commands: orgs, users, API keys, nodes and migrations.

Each works directly on the database (no running coordinator needed) and
prints a table, or JSON with ``--json``. Changes to nodes go through the
same domain functions and change log as the API, so a running coordinator
delivers them to the nodes within a second.
"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from coordinator import accounts, db, nodes, schema
from coordinator.cli_common import (
    DB_OPTION,
    JSON_OPTION,
    create_if_missing,
    emit,
    emit_one,
    from_database,
    in_database,
    require_existing,
    run,
)
from coordinator.errors import NotFound
from coordinator.models import ApiKey, Node, Org, Role, User
from coordinator.paging import Cursors


def _org_row(org: Org) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "ipv4Prefix": org.ipv4_prefix,
        "ipv6Prefix": org.ipv6_prefix,
        "meshVersion": org.mesh_version,
        "createdAt": org.created_at.isoformat(),
    }


def _user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "createdAt": user.created_at.isoformat(),
    }


def _key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.display_prefix + "…",
        "user": key.user.email,
        "role": key.role,
        "scopes": ",".join(key.scopes),
        "createdAt": key.created_at.isoformat(),
        "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _node_row(node: Node) -> dict[str, Any]:
    status = "revoked" if node.revoked_at else ("online" if node.online else "offline")
    return {
        "id": node.id,
        "name": node.name,
        "ipv4": node.address.ipv4 if node.address else None,
        "ipv6": node.address.ipv6 if node.address else None,
        "status": status,
        "os": node.os,
        "publicKey": node.public_key,
        "endpoints": ",".join(node.endpoints or []),
        "createdAt": node.created_at.isoformat(),
        "lastSeenAt": node.last_seen_at.isoformat() if node.last_seen_at else None,
    }


ORG_OPTION = click.option(
    "--org",
    envvar="RUNMESH_ORG",
    show_envvar=True,
    required=True,
    help="Org name (or id).",
)


# ---- orgs ----


@click.group()
def orgs() -> None:
    """Create and list orgs."""


@orgs.command("create")
@DB_OPTION
@click.argument("name")
@click.option(
    "--ipv4-prefix-length",
    type=click.IntRange(10, 30),
    default=16,
    show_default=True,
    help="Size of the org's block inside 100.64.0.0/10.",
)
@JSON_OPTION
def orgs_create(db_url: str, name: str, ipv4_prefix_length: int, as_json: bool) -> None:
    """Create an org NAME (or show it if it exists)."""

    def work(session: Session) -> dict[str, Any]:
        return _org_row(accounts.ensure_org(session, name, ipv4_prefix_length))

    emit_one(run(in_database(db_url, work)), as_json)


@orgs.command("list")
@DB_OPTION
@JSON_OPTION
def orgs_list(db_url: str, as_json: bool) -> None:
    """List every org."""

    def work(session: Session) -> list[dict[str, Any]]:
        return [_org_row(o) for o in accounts.list_orgs(session)]

    emit(
        run(from_database(db_url, work)),
        as_json,
        ("id", "name", "ipv4Prefix", "meshVersion"),
    )


# ---- users ----


@click.group()
def users() -> None:
    """Create and list users of an org."""


@users.command("create")
@DB_OPTION
@ORG_OPTION
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default="member",
    show_default=True,
)
@JSON_OPTION
def users_create(db_url: str, org: str, email: str, role: str, as_json: bool) -> None:
    """Create a user EMAIL in an org (the org is created when missing)."""

    def work(session: Session) -> dict[str, Any]:
        the_org = accounts.ensure_org(session, org)
        return _user_row(accounts.ensure_user(session, the_org, email, Role(role)))

    emit_one(run(in_database(db_url, work)), as_json)


@users.command("list")
@DB_OPTION
@ORG_OPTION
@JSON_OPTION
def users_list(db_url: str, org: str, as_json: bool) -> None:
    """List the users of an org."""

    def work(session: Session) -> list[dict[str, Any]]:
        the_org = accounts.find_org(session, org)
        return [_user_row(u) for u in accounts.list_users(session, the_org)]

    emit(
        run(from_database(db_url, work)), as_json, ("id", "email", "role", "createdAt")
    )


# ---- keys ----


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@DB_OPTION
@ORG_OPTION
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
@JSON_OPTION
def keys_create(
    db_url: str,
    org: str,
    email: str,
    role: str,
    scopes: str,
    if_none: bool,
    as_json: bool,
) -> None:
    """Create an API key and print it, alone, on standard output.

    The org and the user are created when missing. The key is shown only
    now; the database keeps a hash. With --json the key is in "key".
    """

    def work(session: Session) -> dict[str, Any] | None:
        wanted = accounts.parse_scopes(scopes)
        if if_none and accounts.count_keys(session) > 0:
            return None
        the_org = accounts.ensure_org(session, org)
        user = accounts.ensure_user(session, the_org, email, Role(role))
        row, key = accounts.create_api_key(session, user, Role(role), wanted)
        return {"key": key, "id": row.id, "org": the_org.name, "user": user.email}

    created = run(in_database(db_url, work))
    if created is None:
        click.echo("an API key already exists; no new key created", err=True)
    elif as_json:
        emit_one(created, True)
    else:
        click.echo(created["key"])


@keys.command("list")
@DB_OPTION
@ORG_OPTION
@JSON_OPTION
def keys_list(db_url: str, org: str, as_json: bool) -> None:
    """List an org's API keys (their prefixes; the keys themselves are not kept)."""

    def work(session: Session) -> list[dict[str, Any]]:
        the_org = accounts.find_org(session, org)
        return [_key_row(k) for k in accounts.list_keys(session, the_org)]

    emit(
        run(from_database(db_url, work)),
        as_json,
        ("id", "prefix", "user", "role", "scopes", "revokedAt"),
    )


@keys.command("revoke")
@DB_OPTION
@click.argument("key_id")
@JSON_OPTION
def keys_revoke(db_url: str, key_id: str, as_json: bool) -> None:
    """Revoke the API key KEY_ID; it is refused from the next request on."""

    def work(session: Session) -> dict[str, Any]:
        return _key_row(accounts.revoke_key(session, key_id))

    emit_one(run(in_database(db_url, work)), as_json)


# ---- nodes ----


@click.group("nodes")
def nodes_group() -> None:
    """List, show, rename and revoke nodes."""


@nodes_group.command("list")
@DB_OPTION
@ORG_OPTION
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked nodes.")
@JSON_OPTION
def nodes_list(db_url: str, org: str, include_revoked: bool, as_json: bool) -> None:
    """List an org's nodes."""

    def work(session: Session) -> list[dict[str, Any]]:
        the_org = accounts.find_org(session, org)
        caller = accounts.operator(the_org.id)
        cursors = Cursors(b"operator-cli")
        rows: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = nodes.list_nodes(
                session,
                caller,
                cursors,
                limit=500,
                cursor=cursor,
                where=nodes.NodeFilter(include_revoked=include_revoked),
            )
            rows += [_node_row(n) for n in page.nodes]
            if not page.has_more:
                return rows
            cursor = page.next_cursor

    emit(
        run(from_database(db_url, work)),
        as_json,
        ("id", "name", "ipv4", "ipv6", "status", "os", "lastSeenAt"),
    )


def _node_of(session: Session, node_id: str) -> tuple[Node, accounts.Caller]:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id[:64]!r}")
    return node, accounts.operator(node.org_id)


@nodes_group.command("show")
@DB_OPTION
@click.argument("node_id")
@JSON_OPTION
def nodes_show(db_url: str, node_id: str, as_json: bool) -> None:
    """Show one node."""

    def work(session: Session) -> dict[str, Any]:
        node, _ = _node_of(session, node_id)
        return _node_row(node)

    emit_one(run(from_database(db_url, work)), as_json)


@nodes_group.command("rename")
@DB_OPTION
@click.argument("node_id")
@click.argument("name")
@JSON_OPTION
def nodes_rename(db_url: str, node_id: str, name: str, as_json: bool) -> None:
    """Rename a node (a DNS label, unique among the org's active nodes)."""

    def work(session: Session) -> dict[str, Any]:
        node, caller = _node_of(session, node_id)
        return _node_row(nodes.rename_node(session, caller, node.id, name))

    emit_one(run(in_database(db_url, work)), as_json)


@nodes_group.command("revoke")
@DB_OPTION
@click.argument("node_id")
@JSON_OPTION
def nodes_revoke(db_url: str, node_id: str, as_json: bool) -> None:
    """Revoke a node: its peers drop it and its key is refused from now on."""

    def work(session: Session) -> dict[str, Any]:
        node, caller = _node_of(session, node_id)
        return _node_row(nodes.revoke_node(session, caller, node.id))

    emit_one(run(in_database(db_url, work)), as_json)


# ---- migrations ----


@click.group()
def migrate() -> None:
    """Upgrade, downgrade or show the database schema (Alembic)."""


def _progress(*, step: Any, **_: Any) -> None:
    """Alembic's on_version_apply hook: one line per migration step."""
    verb = "upgraded to" if step.is_upgrade else "downgraded from"
    click.echo(f"  {verb} {step.up_revision_id}", err=True)


def _migrate(db_url: str, as_json: bool, revision: str | None, down: bool) -> None:
    async def go() -> dict[str, Any]:
        if revision is None or down:
            require_existing(db_url)  # nothing to read or take down
        else:
            create_if_missing(db_url)
        engine = db.create_engine(db_url)
        try:
            if revision is not None and down:
                await schema.downgrade(engine, revision, _progress)
            elif revision is not None:
                await schema.upgrade(engine, revision, _progress)
            current = await schema.current_revision(engine)
        finally:
            engine.dispose()
        return {"current": current, "head": schema.head_revision()}

    emit_one(run(go), as_json)


@migrate.command("upgrade")
@DB_OPTION
@click.argument("revision", default="head")
@JSON_OPTION
def migrate_upgrade(db_url: str, revision: str, as_json: bool) -> None:
    """Upgrade the schema to REVISION (default: head), showing each step."""
    _migrate(db_url, as_json, revision, down=False)


@migrate.command("downgrade")
@DB_OPTION
@click.argument("revision")
@JSON_OPTION
def migrate_downgrade(db_url: str, revision: str, as_json: bool) -> None:
    """Downgrade the schema to REVISION ("base" removes every table)."""
    _migrate(db_url, as_json, revision, down=True)


@migrate.command("current")
@DB_OPTION
@JSON_OPTION
def migrate_current(db_url: str, as_json: bool) -> None:
    """Show the schema's current revision and the newest one."""
    _migrate(db_url, as_json, None, down=False)


COMMANDS = (orgs, users, keys, nodes_group, migrate)

"""The operator's command line against a real database: every command has
--help, works, and prints JSON that parses with --json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.processes import BIN, gateway_client, start_coordinator, start_gateway

COORDINATOR = str(BIN / "runmesh-coordinator")

COMMANDS = [
    [],
    ["serve"],
    ["orgs"],
    ["orgs", "create"],
    ["orgs", "list"],
    ["users"],
    ["users", "create"],
    ["users", "list"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["nodes"],
    ["nodes", "list"],
    ["nodes", "show"],
    ["nodes", "rename"],
    ["nodes", "revoke"],
    ["migrate"],
    ["migrate", "upgrade"],
    ["migrate", "downgrade"],
    ["migrate", "current"],
]


def cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [COORDINATOR, *argv], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done


def as_json(*argv: str) -> Any:
    return json.loads(cli(*argv, "--json").stdout)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "main")
def test_every_command_says_what_it_does(argv: list[str]) -> None:
    done = cli(*argv, "--help")
    assert "Usage:" in done.stdout
    summary = done.stdout.split("\n\n")[1].strip()
    assert len(summary) > 10, done.stdout


def test_the_commands_work_on_a_real_database_and_print_json(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ops.db'}"

    migrated = as_json("migrate", "upgrade", "--db", db)
    assert migrated["current"] == migrated["head"]
    assert as_json("migrate", "current", "--db", db)["current"] == migrated["head"]

    org = as_json("orgs", "create", "acme", "--db", db)
    assert org["name"] == "acme" and org["ipv4Prefix"].startswith("100.")
    assert [o["name"] for o in as_json("orgs", "list", "--db", db)] == ["acme"]

    user = as_json("users", "create", "--db", db, "--org", "acme", "ops@acme.test")
    assert user["role"] == "member"
    users = as_json("users", "list", "--db", db, "--org", "acme")
    assert [u["email"] for u in users] == ["ops@acme.test"]

    key = as_json(
        "keys",
        "create",
        "--db",
        db,
        "--org",
        "acme",
        "--user",
        "ops@acme.test",
        "--role",
        "member",
        "--scopes",
        "runmesh:read",
    )
    assert key["key"].startswith("rt_live_")
    listed = as_json("keys", "list", "--db", db, "--org", "acme")
    assert [k["id"] for k in listed] == [key["id"]]
    assert key["key"] not in json.dumps(listed)  # only a prefix is kept

    assert as_json("nodes", "list", "--db", db, "--org", "acme") == []
    missing = cli("nodes", "show", "--db", db, "node_nope", check=False)
    assert missing.returncode == 2 and "no node" in missing.stderr

    revoked = as_json("keys", "revoke", "--db", db, key["id"])
    assert revoked["revokedAt"]

    down = as_json("migrate", "downgrade", "--db", db, "base")
    assert down["current"] is None


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'bad.db'}"
    for argv in (
        [
            "keys",
            "create",
            "--db",
            db,
            "--org",
            "x",
            "--user",
            "a@b.cd",
            "--scopes",
            "nope",
        ],
        ["keys", "create", "--db", "mysql://x/y", "--org", "x", "--user", "a@b.cd"],
        ["users", "create", "--db", db, "--org", "x", "not-an-email"],
        ["orgs", "list", "--db", db, "--org", "x"],
        ["migrate", "upgrade", "--db", db, "no-such-revision"],
        ["nodes", "list", "--db", db, "--org", "nobody"],
    ):
        done = cli(*argv, check=False)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.strip(), argv


def test_a_revoked_key_is_refused_on_the_very_next_request(tmp_path: Path) -> None:
    coordinator = start_coordinator(tmp_path)
    gateway = start_gateway(tmp_path, coordinator.target)
    try:
        key = as_json(
            "keys",
            "create",
            "--db",
            coordinator.db_url,
            "--org",
            "acme",
            "--user",
            "admin@acme.test",
        )
        with gateway_client(gateway, key["key"]) as api:
            assert api.get("/nodes").status_code == 200
            cli("keys", "revoke", "--db", coordinator.db_url, key["id"])
            refused = api.get("/nodes")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    finally:
        gateway.stop()
        coordinator.stop()


def test_listings_do_not_wait_for_the_write_lock(tmp_path: Path) -> None:
    """Regression: the listing commands ran in a writing transaction, so an
    operator's `nodes list` queued behind a coordinator's writes (and its
    writes behind the listing). Hold SQLite's write lock from another
    connection: every listing must still answer at once."""
    import sqlite3
    import time

    db = f"sqlite:///{tmp_path / 'c.db'}"
    cli("keys", "create", "--db", db, "--org", "acme", "--user", "a@acme.test")
    holder = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for argv in (
            ["orgs", "list"],
            ["users", "list", "--org", "acme"],
            ["keys", "list", "--org", "acme"],
            ["nodes", "list", "--org", "acme"],
        ):
            started = time.monotonic()
            listed = as_json(*argv, "--db", db)
            # Far below the 30 s busy timeout a writer would wait for.
            assert time.monotonic() - started < 10, argv
            assert isinstance(listed, list), argv
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["orgs", "list"],
        ["users", "list", "--org", "default"],
        ["keys", "list", "--org", "default"],
        ["nodes", "list", "--org", "default"],
        ["nodes", "show", "node_x"],
    ],
    ids=" ".join,
)
def test_a_listing_refuses_a_database_that_does_not_exist(
    tmp_path: Path, argv: list[str]
) -> None:
    # Regression: a mistyped --db made a new, empty database and listed it.
    missing = tmp_path / "typo" / "runmesh.db"
    done = cli(*argv, "--db", f"sqlite:///{missing}", check=False)
    assert done.returncode == 2, done
    assert f"no database at {missing}" in done.stderr
    assert not missing.parent.exists()


def test_a_write_says_when_it_creates_the_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / "runmesh.db"
    url = f"sqlite:///{path}"
    first = cli("orgs", "create", "acme", "--db", url)
    assert f"creating a new database at {path}" in first.stderr
    second = cli("orgs", "create", "other", "--db", url)
    assert "creating a new database" not in second.stderr
    assert {o["name"] for o in as_json("orgs", "list", "--db", url)} >= {"acme"}


def test_a_write_that_fails_leaves_no_new_database_behind(tmp_path: Path) -> None:
    path = tmp_path / "new" / "runmesh.db"
    done = cli(
        "nodes", "rename", "node_x", "ada", "--db", f"sqlite:///{path}", check=False
    )
    assert done.returncode == 2, done
    assert "no node" in done.stderr
    assert not path.exists() and not Path(f"{path}-wal").exists()


@pytest.mark.parametrize(
    "argv", [["migrate", "current"], ["migrate", "downgrade", "base"]]
)
def test_migrate_reads_or_takes_down_only_a_database_that_exists(
    tmp_path: Path, argv: list[str]
) -> None:
    missing = tmp_path / "typo.db"
    done = cli(*argv, "--db", f"sqlite:///{missing}", check=False)
    assert done.returncode == 2, done
    assert f"no database at {missing}" in done.stderr
    assert not missing.exists()


def test_migrate_upgrade_says_when_it_creates_the_database(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    done = cli("migrate", "upgrade", "--db", f"sqlite:///{path}")
    assert f"creating a new database at {path}" in done.stderr
    assert path.exists()

"""The changes a feed takes without reading them back from the log: only
what this process committed, only runs that follow the feed's version with
no gap, and never anything from a unit of work that rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest
from domain_db import in_transaction, link_node, new_caller, open_database
from sqlalchemy.orm import Session

from coordinator import changelog, nodes
from coordinator.changes import Change, ChangeOp
from coordinator.settings import Settings

pytestmark = pytest.mark.anyio


def change(version: int) -> Change:
    return Change(version, ChangeOp.UPSERT, f"node-{version}", f"key-{version}", None)


def test_only_a_run_that_follows_the_version_without_a_gap() -> None:
    recent = changelog.RecentCommits()
    recent.add([("org", change(v)) for v in (3, 4, 6)])
    assert recent.following("org", 1) == []  # 2 is missing: read the log
    assert [c.version for c in recent.following("org", 2)] == [3, 4]
    # Delivered versions are dropped; 6 waits for 5 (committed elsewhere).
    assert recent.following("org", 4) == []
    recent.add([("org", change(5))])
    assert [c.version for c in recent.following("org", 4)] == [5, 6]
    assert recent.following("other-org", 0) == []


def test_commits_added_out_of_order_still_make_a_run() -> None:
    recent = changelog.RecentCommits()
    recent.add([("org", change(2))])
    recent.add([("org", change(1))])
    assert [c.version for c in recent.following("org", 0)] == [1, 2]


def test_at_most_per_org_changes_are_kept() -> None:
    recent = changelog.RecentCommits(per_org=3)
    recent.add([("org", change(v)) for v in range(1, 6)])
    assert recent.following("org", 0) == []
    assert [c.version for c in recent.following("org", 2)] == [3, 4, 5]


async def test_committed_changes_are_kept_and_rolled_back_ones_are_not(
    tmp_path: Path,
) -> None:
    sessions = await open_database(tmp_path / "x.db")
    recent = changelog.RecentCommits()
    changelog.remember_commits(sessions.sessions, recent)
    try:
        caller = await new_caller(sessions)
        node = await link_node(sessions, Settings(), caller)
        kept = recent.following(caller.org_id, 0)
        assert [(c.op, c.node_id) for c in kept] == [(ChangeOp.UPSERT, node.id)]
        version = kept[-1].version

        def rename_then_fail(session: Session) -> None:
            nodes.rename_node(session, caller, node.id, "renamed")
            raise RuntimeError("the unit of work fails after its change")

        with pytest.raises(RuntimeError):
            await in_transaction(sessions, rename_then_fail)
        assert recent.following(caller.org_id, version) == []

        def rename(session: Session) -> None:
            nodes.rename_node(session, caller, node.id, "renamed")

        await in_transaction(sessions, rename)
        (renamed,) = recent.following(caller.org_id, version)
        assert renamed.version == version + 1
        assert renamed.peer is not None and renamed.peer.name == "renamed"
        # The very row the log holds.
        logged = await in_transaction(
            sessions,
            lambda session: changelog.changes_since(session, caller.org_id, version),
        )
        assert logged == [renamed]
    finally:
        await sessions.close()

"""A stream's inbox: bounded, reset to one full map, never losing its end.

Unit tests of ``hub.Subscriber`` alone; the same behaviour through real
streams is in test_stream_regressions.py (the slow consumer).
"""

from __future__ import annotations

import pytest

from coordinator.hub import (
    Broadcast,
    FullMapNeeded,
    ReconnectRequest,
    Revocation,
    Subscriber,
)

pytestmark = pytest.mark.anyio


def broadcast(version: int) -> Broadcast:
    return Broadcast(version - 1, version, (), b"")


async def test_items_come_out_in_order_and_wake_the_writer() -> None:
    inbox = Subscriber(1, "org", "node", "key", limit=4)
    inbox.offer(broadcast(1))
    inbox.offer(broadcast(2))

    assert inbox.wake.is_set()
    assert [item.to_version for item in inbox.take()] == [1, 2]  # type: ignore[union-attr]
    assert inbox.take() == []


async def test_a_full_inbox_becomes_one_full_map() -> None:
    inbox = Subscriber(1, "org", "node", "key", limit=3)
    for version in range(1, 5):
        inbox.offer(broadcast(version))

    items = inbox.take()
    assert len(items) == 1 and isinstance(items[0], FullMapNeeded)
    assert inbox.resets == 1


@pytest.mark.parametrize(
    "ending", [Revocation("node revoked"), ReconnectRequest("shutting down", 500)]
)
async def test_the_end_of_the_stream_survives_a_reset(
    ending: Revocation | ReconnectRequest,
) -> None:
    """Regression: the item that overflowed the inbox was dropped with the
    deltas, so a revocation offered to a slow stream's full inbox was lost."""
    inbox = Subscriber(1, "org", "node", "key", limit=2)
    inbox.offer(broadcast(1))
    inbox.offer(broadcast(2))

    inbox.offer(ending)

    items = inbox.take()
    assert isinstance(items[0], FullMapNeeded)
    assert items[1:] == [ending]

"""A stream's inbox: bounded, reset to one full map, never losing its end.

Unit tests of ``hub.Subscriber`` alone; the same behaviour through real
streams is in test_stream_regressions.py (the slow consumer).
"""

from __future__ import annotations

import pytest

from coordinator.hub import (
    Broadcast,
    FullMapNeeded,
    QueueItem,
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


async def test_the_next_delta_alone_is_taken_on_the_short_path() -> None:
    inbox = Subscriber(1, "org", "node", "key", limit=4)
    inbox.version = 1
    inbox.offer(broadcast(2))

    taken = inbox.take_next_delta()

    assert taken is not None and taken.to_version == 2
    assert inbox.take() == []


@pytest.mark.parametrize(
    "queued",
    [
        [broadcast(3)],  # does not follow version 1: a gap, the general path
        [broadcast(2), broadcast(3)],  # more than one item
        [broadcast(2), Revocation("node revoked")],  # the stream's end too
        [FullMapNeeded()],
        [],
    ],
)
async def test_anything_else_is_left_for_the_general_path(
    queued: list[QueueItem],
) -> None:
    inbox = Subscriber(1, "org", "node", "key", limit=4)
    inbox.version = 1
    inbox.inbox.extend(queued)

    assert inbox.take_next_delta() is None
    assert inbox.take() == queued

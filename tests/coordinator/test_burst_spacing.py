"""In a burst, a feed delivers no sooner than its streams can be written.

Regression: a 100 ms quiet gap between two presence writes ended every
round of a reconnect storm, so 10,000 connecting streams were sent 131
deltas each and connecting stalled at about 3,500. ``OrgFeed`` alone, with
stand-in subscribers: the rule is about when it delivers, not what.
"""

from __future__ import annotations

import time

import pytest

from coordinator.hub import BURST_WRITES_PER_SECOND, Coalescing, OrgFeed, Subscriber
from coordinator.store import Database

pytestmark = pytest.mark.anyio

RULES = Coalescing(
    quiet=0.005,
    max_delay=0.05,
    burst_window=1.0,
    burst_quiet=0.01,
    burst_max_delay=0.05,
)


def feed_with(subscribers: int) -> OrgFeed:
    # The database is never touched: only the wait before a delivery runs.
    feed = OrgFeed("org", Database.__new__(Database), RULES)
    for i in range(subscribers):
        feed.subscribers[i] = Subscriber(i, "org", f"n{i}", f"k{i}")
    return feed


async def test_a_burst_waits_one_write_per_stream_after_the_last_delivery() -> None:
    feed = feed_with(300)
    feed._delivered_at = time.monotonic()  # delivered just now: a burst
    feed.wake()

    started = time.monotonic()
    await feed._wait_for_quiet()
    waited = time.monotonic() - started

    spacing = 300 / BURST_WRITES_PER_SECOND
    assert waited >= spacing * 0.95, waited


async def test_a_change_after_a_calm_waits_only_for_quiet() -> None:
    feed = feed_with(300)
    feed._delivered_at = time.monotonic() - 5.0  # long ago: not a burst
    feed.wake()

    started = time.monotonic()
    await feed._wait_for_quiet()
    waited = time.monotonic() - started

    assert waited < 300 / BURST_WRITES_PER_SECOND / 2, waited

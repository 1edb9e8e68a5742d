"""When a feed delivers: at once after a calm; in a burst, no sooner than
its streams can be written.

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


async def test_a_change_after_a_calm_waits_for_nothing() -> None:
    feed = feed_with(300)
    feed._delivered_at = time.monotonic() - 5.0  # long ago: a calm
    feed.wake()

    started = time.monotonic()
    await feed._wait_for_quiet()
    waited = time.monotonic() - started

    assert waited < RULES.quiet, waited


def test_a_change_after_a_calm_goes_at_once() -> None:
    assert RULES.plan(5.0, 300, after_lead=False).at_once


def test_a_calm_lasts_at_least_one_write_per_stream() -> None:
    # 10,000 streams take 10 s to write once each: 5 s after a delivery
    # the org is not calm, though the burst window (1 s) is long past.
    wait = RULES.plan(5.0, 10_000, after_lead=False)
    assert not wait.at_once
    assert (wait.first, wait.quiet) == (0.0, RULES.quiet)


def test_changes_right_behind_one_sent_at_once_wait_only_for_quiet() -> None:
    wait = RULES.plan(0.002, 300, after_lead=True)
    assert (wait.at_once, wait.first) == (False, 0.0)
    assert (wait.quiet, wait.longest) == (RULES.quiet, RULES.max_delay)


def test_after_that_changes_are_a_burst() -> None:
    wait = RULES.plan(0.1, 300, after_lead=False)
    assert wait.first == pytest.approx(300 / BURST_WRITES_PER_SECOND - 0.1)
    assert (wait.quiet, wait.longest) == (RULES.burst_quiet, RULES.burst_max_delay)


async def test_a_feed_waits_for_quiet_right_after_a_delivery_made_at_once() -> None:
    feed = feed_with(300)
    feed._delivered_at = time.monotonic()
    feed._last_at_once = True
    feed.wake()

    started = time.monotonic()
    await feed._wait_for_quiet()
    waited = time.monotonic() - started

    assert RULES.quiet * 0.9 <= waited < 300 / BURST_WRITES_PER_SECOND / 2, waited


def test_after_a_calm_a_change_waits_for_quiet_while_more_writes_are_coming() -> None:
    # A script's hundred renames: the first commits while 99 are queued on
    # the writer thread; sending it alone would cost every stream a write.
    wait = RULES.plan(5.0, 300, after_lead=False, writing=True)
    assert (wait.at_once, wait.first) == (False, 0.0)
    assert (wait.quiet, wait.longest) == (RULES.quiet, RULES.max_delay)

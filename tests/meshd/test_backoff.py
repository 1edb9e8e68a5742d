"""The reconnect backoff: jittered, capped short at first, longer in an outage."""

from __future__ import annotations

import statistics

from meshd.backoff import Backoff


def test_waits_grow_and_stay_under_the_short_cap() -> None:
    backoff = Backoff(base=0.5, cap=5.0)
    waits = [backoff.next_delay() for _ in range(50)]
    assert all(0.25 <= w <= 5.0 for w in waits)
    assert max(waits[10:]) > 1.0  # it did grow


def test_a_long_outage_lets_the_waits_grow_to_the_long_cap() -> None:
    backoff = Backoff(base=0.5, cap=5.0, long_cap=30.0, long_after=0.0)
    backoff.next_delay()
    waits = [backoff.next_delay() for _ in range(200)]
    assert max(waits) <= 30.0
    assert max(waits) > 5.0


def test_reset_starts_over_and_jitter_spreads_nodes_apart() -> None:
    backoff = Backoff()
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    first_waits = []
    for _ in range(100):
        fresh = Backoff()
        for _ in range(4):
            fresh.next_delay()
        first_waits.append(fresh.next_delay())
    assert statistics.pstdev(first_waits) > 0.5  # not all the same

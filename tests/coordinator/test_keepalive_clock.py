"""The one clock behind every stream's keepalives: a stream is woken when
its keepalive is due, not before, again an interval after it sent one, and
never after it stopped."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.keepalive import KeepaliveClock

pytestmark = pytest.mark.anyio


async def test_a_stream_is_woken_when_its_keepalive_is_due() -> None:
    clock = KeepaliveClock(interval=0.4, tick=0.02)
    wake = asyncio.Event()
    started = time.monotonic()
    beat = clock.start(wake)
    try:
        await asyncio.wait_for(wake.wait(), 2)
        waited = time.monotonic() - started
        # Due within the second half of the first interval, late by a tick.
        assert 0.2 - 0.01 <= waited <= 0.4 + 0.1
        assert beat.owed

        # Owed until sent: the clock does not wake it again meanwhile.
        wake.clear()
        await asyncio.sleep(0.1)
        assert not wake.is_set()

        clock.sent(beat)
        assert not beat.owed
        sent_at = time.monotonic()
        await asyncio.wait_for(wake.wait(), 2)
        assert time.monotonic() - sent_at >= 0.4 - 0.01
    finally:
        clock.stop(beat)
        await clock.close()


async def test_a_stopped_stream_is_never_woken() -> None:
    clock = KeepaliveClock(interval=0.1, tick=0.01)
    wake = asyncio.Event()
    beat = clock.start(wake)
    clock.stop(beat)
    assert len(clock) == 0
    await asyncio.sleep(0.3)
    assert not wake.is_set() and not beat.owed
    await clock.close()


async def test_many_streams_one_task() -> None:
    clock = KeepaliveClock(interval=0.2, tick=0.01)
    wakes = [asyncio.Event() for _ in range(500)]
    beats = [clock.start(w) for w in wakes]
    tasks = {t for t in asyncio.all_tasks() if t.get_name() == "keepalives"}
    assert len(tasks) == 1
    await asyncio.wait_for(asyncio.gather(*(w.wait() for w in wakes)), 2)
    for beat in beats:
        clock.stop(beat)
    await clock.close()

"""The coordinator's garbage-collection policy: old objects frozen, cycles
still freed by the periodic full collection, the young generation collected
less often, and everything as it was once it stops."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from coordinator import collector

pytestmark = pytest.mark.anyio


class Cyclic:
    def __init__(self) -> None:
        self.me = self


async def test_survivors_are_frozen_and_cycles_still_freed() -> None:
    threshold = gc.get_threshold()
    task = asyncio.create_task(collector.keep_collecting(0.05, 0.3, 12_345))
    try:
        await asyncio.sleep(0)
        assert gc.get_threshold() == (12_345, *threshold[1:])
        cycle = Cyclic()
        alive = weakref.ref(cycle)
        await asyncio.sleep(0.15)
        assert gc.get_freeze_count() > 0  # survivors moved out of the collector's way
        del cycle
        gc.collect()
        # Frozen: a cycle is not freed by an ordinary collection...
        assert alive() is not None
        # ...but by the periodic full collection.
        for _ in range(40):
            await asyncio.sleep(0.05)
            if alive() is None:
                break
        assert alive() is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold

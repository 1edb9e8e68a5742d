"""A bound on stream set-ups in progress.

Setting up a stream (authenticate, subscribe, send the first map) costs far
more than holding one. In a reconnect storm thousands arrive at once; they
are let through ``limit`` at a time, a queue of at most ``max_waiting``
waits its turn, and anything beyond is told RESOURCE_EXHAUSTED with a
randomised retry-after. Live streams are never starved: their deltas do not
pass through the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

from coordinator.errors import Overloaded


class SetupGate:
    def __init__(self, limit: int = 64, max_waiting: int = 20_000) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._max_waiting = max_waiting
        self._waiting = 0
        self.refused = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self._waiting >= self._max_waiting:
            self.refused += 1
            raise Overloaded(
                "the coordinator is busy setting up streams; retry later",
                retry_after=random.randint(1, 5),
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

"""One clock for the keepalives of every open Sync stream.

Each stream's writer sends the node a keepalive every interval and closes a
stream whose node has been silent too long. It used to wait for its next
item under a timeout of its own, which arms and cancels a timer every time
anything is queued for it: a fan-out to 10,000 streams armed 10,000 timers,
about 9 µs each here, for nothing. Now the writer waits on its wake-up
Event alone, and this clock, one task for the whole process, looks at
every stream once per tick and wakes those whose keepalive is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass


@dataclass(eq=False)
class Beat:
    """One stream as the clock sees it."""

    wake: asyncio.Event
    # time.monotonic() at which the next keepalive is due.
    due: float
    # Set by the clock when ``due`` has passed; the writer sends a
    # keepalive and calls ``KeepaliveClock.sent``.
    owed: bool = False


class KeepaliveClock:
    def __init__(self, interval: float, tick: float | None = None) -> None:
        self.interval = interval
        # Keepalives are late by at most a tick: small against the node's
        # deadline (several intervals).
        self.tick = tick if tick is not None else min(1.0, interval / 4)
        self._beats: set[Beat] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, wake: asyncio.Event) -> Beat:
        """Keep time for one stream whose writer waits on ``wake``."""
        # The first keepalive comes somewhere in the second half of the
        # first interval, so streams opened together (a reconnect storm)
        # do not all send theirs in the same tick ever after.
        due = time.monotonic() + random.uniform(0.5, 1.0) * self.interval
        beat = Beat(wake, due)
        self._beats.add(beat)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="keepalives"
            )
        return beat

    def sent(self, beat: Beat) -> None:
        beat.owed = False
        beat.due = time.monotonic() + self.interval

    def stop(self, beat: Beat) -> None:
        self._beats.discard(beat)

    def __len__(self) -> int:
        return len(self._beats)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            for beat in self._beats:
                if not beat.owed and beat.due <= now:
                    beat.owed = True
                    beat.wake.set()

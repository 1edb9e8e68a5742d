"""Capped, jittered exponential backoff for reconnecting to the coordinator.

Each wait is uniform in [base/2, min(cap, base * 2**n)] ("full jitter"
with a small floor, so a retry never spins), so a thousand nodes that lost
the coordinator at the same moment come back spread out instead of in one
storm.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures = min(self.failures + 1, 32)
        return random.uniform(self.base / 2, max(self.base / 2, ceiling))

    async def wait(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.failures = 0

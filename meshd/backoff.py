"""Capped, jittered exponential backoff for reconnecting to the coordinator.

Each wait is uniform in [base/2, min(cap, base * 2**n)] ("full jitter"
with a small floor, so a retry never spins): a thousand nodes that lost
the coordinator at the same moment come back spread out instead of in one
storm.

Two caps. A coordinator restart or upgrade takes seconds, and a node
should be back within seconds of it, so for the first ``long_after``
seconds of failing the waits stay under ``cap`` (5 s). A coordinator that
stays away longer is an outage, and the fleet should not hammer it: the
waits may then grow to ``long_cap`` (30 s). The data plane does not wait
for any of this: WireGuard keeps its last good configuration meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time


class Backoff:
    def __init__(
        self,
        base: float = 0.5,
        cap: float = 5.0,
        long_cap: float = 30.0,
        long_after: float = 120.0,
    ) -> None:
        self.base = base
        self.cap = cap
        self.long_cap = long_cap
        self.long_after = long_after
        self.failures = 0
        self._failing_since: float | None = None

    def next_delay(self) -> float:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        long_outage = now - self._failing_since > self.long_after
        cap = self.long_cap if long_outage else self.cap
        ceiling = min(cap, self.base * (2**self.failures))
        self.failures = min(self.failures + 1, 32)
        return random.uniform(self.base / 2, max(self.base / 2, ceiling))

    async def wait(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.failures = 0
        self._failing_since = None

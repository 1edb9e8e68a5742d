"""Limits on failed link approvals and polls, per API key and per source.

A link code has about 3.9e8 values; without limits a script could try
codes until one approves a stranger's device into its org. Each failed
approval counts against the API key and against the client's address;
each failed poll against the address; every link start counts against the
address too, since each one stores a request. Once a limit is reached, further
attempts are refused with ``rate_limited`` before the code is even looked
up, so a refused attempt teaches nothing and costs nothing — and does not
count again, which keeps a shared address (a NAT, the gateway) usable for
everyone else.

Counters live in this process's memory (moving windows from the ``limits``
library). With several replicas each keeps its own, which multiplies the
allowance by the replica count; the space of codes stays far out of reach.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from coordinator import metrics
from coordinator.errors import RateLimited

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    approvals_per_key: int = 10
    approvals_per_source: int = 30
    polls_per_source: int = 30
    # Link starts are not failures, but each one stores a request: a script
    # must not be able to fill the database with them.
    starts_per_source: int = 60


class FailureLimiter:
    def __init__(self, policy: Policy | None = None) -> None:
        policy = policy or Policy()
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._approve_key = RateLimitItemPerMinute(policy.approvals_per_key)
        self._approve_source = RateLimitItemPerMinute(policy.approvals_per_source)
        self._poll_source = RateLimitItemPerMinute(policy.polls_per_source)
        self._start_source = RateLimitItemPerMinute(policy.starts_per_source)

    async def check_approval(self, key_hash: str, source: str) -> None:
        """``key_hash``: the API key's hash, known before it is looked up."""
        await self._check(self._approve_key, "approve-key", key_hash)
        await self._check(self._approve_source, "approve-source", source)

    async def approval_failed(self, key_hash: str, source: str) -> None:
        await self._limiter.hit(self._approve_key, "approve-key", key_hash)
        await self._limiter.hit(self._approve_source, "approve-source", source)

    async def started(self, source: str) -> None:
        """Count a link start; refuse it if the source started too many."""
        if not await self._limiter.hit(self._start_source, "start-source", source):
            await self._check(self._start_source, "start-source", source)

    async def check_poll(self, source: str) -> None:
        await self._check(self._poll_source, "poll-source", source)

    async def poll_failed(self, source: str) -> None:
        await self._limiter.hit(self._poll_source, "poll-source", source)

    async def _check(self, item: RateLimitItem, kind: str, who: str) -> None:
        if await self._limiter.test(item, kind, who):
            return
        metrics.RATE_LIMITED.labels(kind.split("-")[0]).inc()
        log.warning("rate limit hit limit=%s", kind)
        stats = await self._limiter.get_window_stats(item, kind, who)
        wait = math.ceil(stats.reset_time - time.time())
        raise RateLimited(
            "too many failed attempts; wait before trying again",
            retry_after=max(1, wait),
        )

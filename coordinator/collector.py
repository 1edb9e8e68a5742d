"""Garbage collection for a process that holds thousands of long-lived streams.

CPython's cycle collector walks every object of the generation it
collects. With 10,000 open streams the coordinator holds about a million
objects, and a full collection then stopped the event loop for 0.7-1.3 s
(measured here), several times a minute while streams were being set up:
an approval that should take milliseconds took over a second, and so did
every delta sent meanwhile.

Most of those objects live as long as their stream, for hours or days. So
every ``freeze_every`` seconds whatever has survived so far is moved to the
permanent generation (``gc.freeze``), and the collector only ever walks
objects younger than that. Acyclic garbage is still freed at once by
reference counting; only reference cycles among frozen objects wait, until
the full collection that runs every ``full_every`` seconds (one pause of
that size per interval, not several a minute).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

FREEZE_EVERY = 60.0
FULL_EVERY = 1800.0


async def keep_collecting(
    freeze_every: float = FREEZE_EVERY, full_every: float = FULL_EVERY
) -> None:
    """Run for the life of the process (cancel to stop)."""
    last_full = time.monotonic()
    try:
        while True:
            await asyncio.sleep(freeze_every)
            if time.monotonic() - last_full >= full_every:
                started = time.perf_counter()
                gc.unfreeze()
                found = gc.collect()
                log.info(
                    "full garbage collection: %d objects freed in %.0f ms",
                    found,
                    (time.perf_counter() - started) * 1000,
                )
                last_full = time.monotonic()
            gc.freeze()
    finally:
        gc.unfreeze()

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
that size per interval, not several a minute). Freezing is a list splice,
so it is done often: a thousand streams set up a moment ago must not be
walked by the next collection (one took 110 ms, in the middle of a
fan-out, before survivors were frozen every 10 s instead of every 60 s).

The young generation is collected when the number of live young objects
has grown by ``young_threshold`` (CPython's default is 700). A fan-out
keeps a few objects per stream alive until its write completes; at 700,
a fan-out to 1,000 streams ran about twenty young collections and two of
the next generation (3-11 ms each), each walking those in-flight objects
again. At 50,000 the same fan-out runs none, and garbage cycles wait for
at most that many new objects (a few MiB).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

FREEZE_EVERY = 10.0
FULL_EVERY = 1800.0
YOUNG_THRESHOLD = 50_000


async def keep_collecting(
    freeze_every: float = FREEZE_EVERY,
    full_every: float = FULL_EVERY,
    young_threshold: int = YOUNG_THRESHOLD,
) -> None:
    """Run for the life of the process (cancel to stop)."""
    last_full = time.monotonic()
    before = gc.get_threshold()
    gc.set_threshold(young_threshold, *before[1:])
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
        gc.set_threshold(*before)
        gc.unfreeze()

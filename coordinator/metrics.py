"""Prometheus metrics of the coordinator, served on an opt-in address.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms, base units). No label ever holds a node id, an org id or a key:
labels are small closed sets (an outcome, a message kind), so the number of
series stays fixed however large the mesh grows.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# How prometheus_client writes a bucket's bound ("0.005", "1.0", "+Inf"),
# typed here: the library leaves it untyped.
_bound_label: Callable[[float], str] = floatToGoString

STREAMS_OPEN = Gauge("runmesh_streams_open", "Sync streams open on this process.")
STREAM_SETUPS = Counter(
    "runmesh_stream_setups_total",
    "Sync stream set-ups by outcome.",
    ["outcome"],  # ok, denied, overloaded, failed
)
SLOW_CONSUMER_RESETS = Counter(
    "runmesh_slow_consumer_resets_total",
    "Streams whose queued deltas were replaced by a full map.",
)
COALESCED_CHANGES = Counter(
    "runmesh_coalesced_changes_total",
    "Changes folded into a delta together with an earlier change.",
)
LINK_REQUESTS = Counter(
    "runmesh_link_requests_total",
    "Link flow requests by step and outcome.",
    ["step", "outcome"],  # step: start, poll, approve
)
APPROVAL_LATENCY = Histogram(
    "runmesh_approval_latency_seconds",
    "Time to approve a link code, from request to commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RATE_LIMITED = Counter(
    "runmesh_rate_limited_total",
    "Requests refused by a rate limit, by what was limited.",
    ["limit"],  # start, poll, approve
)


class StreamWrites(Collector):
    """What the Sync streams wrote: maps by kind, and each delta's fan-out
    latency, kept as plain numbers and read by Prometheus when it scrapes.

    A fan-out to 10,000 streams makes 10,000 updates of these in one burst.
    prometheus_client's own metrics take a lock at every update; here that
    came to about 5 µs a write of the event loop's time (1,000-node
    fan-outs, 30 ms of loop CPU against 25 without them). Only the event
    loop's thread updates these, so they need no lock; a scrape, on another
    thread, copies the bucket counts in one step and derives the count from
    them, so a scrape's buckets and count always agree (the sum may lag by
    the write under way).
    """

    KINDS = ("full_map", "delta", "resume")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.sent = dict.fromkeys(self.KINDS, 0)
        # One slot per bucket (upper bound inclusive), then one for +Inf.
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0

    def count(self, kind: str) -> None:
        self.sent[kind] += 1

    def delta_written(self, latency: float) -> None:
        """One delta written, ``latency`` seconds after its change was taken."""
        self.sent["delta"] += 1
        self._counts[bisect.bisect_left(self.buckets, latency)] += 1
        self._sum += latency

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        sent = CounterMetricFamily(
            "runmesh_maps_sent",
            "Peer-map messages written to streams, by kind.",
            labels=["kind"],
        )
        for kind, value in dict(self.sent).items():
            sent.add_metric([kind], value)
        yield sent
        counts = list(self._counts)
        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
            running += count
            cumulative.append((_bound_label(bound), running))
        yield HistogramMetricFamily(
            "runmesh_fanout_latency_seconds",
            "From taking a change (this process's commits or the log) to "
            "writing its delta to one stream.",
            buckets=cumulative,
            sum_value=self._sum,
        )


STREAM_WRITES = StreamWrites(
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
)
REGISTRY.register(STREAM_WRITES)


def serve_metrics(listen: str) -> None:
    """Serve /metrics on HOST:PORT from a background thread."""
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")

"""Prometheus metrics of the coordinator, served on an opt-in address.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms, base units). No label ever holds a node id, an org id or a key:
labels are small closed sets (an outcome, a message kind), so the number of
series stays fixed however large the mesh grows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STREAMS_OPEN = Gauge("runmesh_streams_open", "Sync streams open on this process.")
STREAM_SETUPS = Counter(
    "runmesh_stream_setups_total",
    "Sync stream set-ups by outcome.",
    ["outcome"],  # ok, denied, overloaded, failed
)
MAPS_SENT = Counter(
    "runmesh_maps_sent_total",
    "Peer-map messages written to streams, by kind.",
    ["kind"],  # full_map, delta, resume
)
SLOW_CONSUMER_RESETS = Counter(
    "runmesh_slow_consumer_resets_total",
    "Streams whose queued deltas were replaced by a full map.",
)
COALESCED_CHANGES = Counter(
    "runmesh_coalesced_changes_total",
    "Changes folded into a delta together with an earlier change.",
)
FANOUT_LATENCY = Histogram(
    "runmesh_fanout_latency_seconds",
    "From taking a change (this process's commits or the log) to writing "
    "its delta to one stream.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
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


def serve_metrics(listen: str) -> None:
    """Serve /metrics on HOST:PORT from a background thread."""
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")

"""Prometheus metrics of the gateway, served on an opt-in address.

Every label is a small closed set, so the number of series stays fixed
whatever clients send: ``route`` is the route's template
(``/v1/runmesh/nodes/{id}``, never a node id) or ``unmatched``, ``method``
one of the methods HTTP names or ``other``, ``status`` an HTTP status.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

REQUESTS = Counter(
    "runmesh_gateway_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "runmesh_gateway_request_duration_seconds",
    "From receiving a request to the end of its answer, by route template.",
    ["route", "method"],
    # Up to the longest --deadline worth having: a slow coordinator shows
    # as answers near the deadline, not as an overflow bucket.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def serve_metrics(host: str, port: int) -> None:
    """Serve /metrics on ``host:port`` from a background thread."""
    start_http_server(port, addr=host)

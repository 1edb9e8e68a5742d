"""One log line and one metric sample per HTTP request, by route template.

A pure ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: it sees the
status of every answer, the envelope's 404 for an unknown path and the 413
of the body limit included, and it never buffers a response. It runs inside
``RequestIdMiddleware`` so that every line names the request id.

The line holds the method, the route template, the status, the duration and
the request id: never the concrete path (it holds node ids), the query
string, a header or a body, so no API key or client data reaches the log.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.envelope import request_id_of
from gateway.errors import documented_template

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OTHER_METHOD = "other"
# nginx's "client closed request": the client left (or the server cancelled
# the request on shutdown) before any answer, so no status was sent, yet the
# request still cost the gateway its time.
_CLIENT_GONE = 499
# What the client gets when the app fails before answering: the outermost
# error middleware renders the 500 after this one has seen the exception.
_CRASHED = 500


class AccessMiddleware:
    """Counts, times and logs every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except asyncio.CancelledError:
            _record(scope, status or _CLIENT_GONE, time.perf_counter() - started)
            raise
        except BaseException:
            _record(scope, status or _CRASHED, time.perf_counter() - started)
            raise
        _record(scope, status or _CLIENT_GONE, time.perf_counter() - started)


def route_of(scope: Scope) -> str:
    """The template of the route the request is for, or ``unmatched``.

    The router writes the route it chose into the scope it was handed (the
    same dict this middleware passed on); a 405 has one too, the path's. An
    answer given before routing (the body limit's 413) has none, so the
    path is looked up among the OpenAPI document's templates instead.
    """
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return template
    if "app" in scope:
        return documented_template(Request(scope)) or UNMATCHED_ROUTE
    return UNMATCHED_ROUTE


def _method_of(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in _METHODS else _OTHER_METHOD


def _record(scope: Scope, status: int, seconds: float) -> None:
    route = route_of(scope)
    method = _method_of(scope)
    request_id = request_id_of(Request(scope))

    metrics.REQUESTS.labels(route, method, str(status)).inc()
    metrics.REQUEST_DURATION.labels(route, method).observe(seconds)

    duration_ms = seconds * 1000
    if status == 429:
        log.warning(
            "rate limit hit route=%s method=%s status=%d duration_ms=%.1f "
            "request_id=%s",
            route,
            method,
            status,
            duration_ms,
            request_id,
        )
        return
    log.info(
        "request method=%s route=%s status=%d duration_ms=%.1f request_id=%s",
        method,
        route,
        status,
        duration_ms,
        request_id,
    )

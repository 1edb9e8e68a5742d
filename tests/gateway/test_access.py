"""``gateway.access``: the per-request log line and metric samples, in-process."""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest
from gateway_fakes import Failure, FakeCoordinator, assert_error
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from gateway.access import AccessMiddleware

pytestmark = pytest.mark.anyio


def _count(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("runmesh_gateway_requests_total", labels) or 0.0


async def test_a_rate_limited_answer_logs_a_warning_with_route_and_request_id(
    client: httpx.AsyncClient, fake: FakeCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    fake.replies["ApproveLink"] = Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", "rate_limited", "3"
    )
    route = "/v1/runmesh/devices/link/approve"
    before = _count(route, "POST", "429")

    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = await client.post(
            route, json={"code": "KX7T9Q"}, headers={"X-API-Key": "rt_live_k"}
        )

    error = assert_error(response, 429, "rate_limited")
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(f"rate limit hit route={route} ")
    assert f"request_id={error['requestId']}" in record.getMessage()
    assert _count(route, "POST", "429") == before + 1


async def test_an_oversized_body_is_counted_and_logged_like_any_answer(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    route = "/v1/runmesh/devices/link/start"
    before = _count(route, "POST", "413")

    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = await client.post(route, content=b"x" * 70_000)

    assert_error(response, 413, "invalid_request")
    # The body limit answers before routing; the route is still the one named.
    assert _count(route, "POST", "413") == before + 1
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert f"route={route} status=413" in record.getMessage()
    assert record.levelno == logging.INFO


async def test_a_crash_before_any_answer_is_counted_as_500_and_re_raised() -> None:
    async def crashing_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    middleware = AccessMiddleware(crashing_app)
    before = _count("unmatched", "GET", "500")
    scope: Scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise AssertionError("nothing may be sent")

    with pytest.raises(RuntimeError):
        await middleware(scope, receive, send)

    assert _count("unmatched", "GET", "500") == before + 1


async def test_the_line_names_neither_the_key_nor_the_query(
    client: httpx.AsyncClient, fake: FakeCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    fake.replies["ListNodes"] = Failure(
        grpc.StatusCode.UNAUTHENTICATED, "", "unauthorized"
    )
    key = "rt_live_verysecretkey123"

    with caplog.at_level(logging.DEBUG, logger="gateway"):
        await client.get(
            "/v1/runmesh/nodes?name=ada-laptop", headers={"X-API-Key": key}
        )

    text = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("gateway")
    )
    assert "route=/v1/runmesh/nodes status=401" in text
    assert key not in text
    assert "ada-laptop" not in text

"""gRPC failures of the coordinator become the contract's REST errors."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from gateway_fakes import (
    KEY,
    Failure,
    FakeCoordinator,
    assert_error,
    free_port,
    open_gateway,
)

pytestmark = pytest.mark.anyio

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (
            Failure(
                Code.INVALID_ARGUMENT,
                "publicKey: must decode to 32 bytes",
                reason="invalid_request",
            ),
            400,
            "invalid_request",
        ),
        (
            Failure(Code.UNAUTHENTICATED, "unknown API key", reason="unauthorized"),
            401,
            "unauthorized",
        ),
        (
            Failure(
                Code.PERMISSION_DENIED, "scope runmesh:write needed", reason="forbidden"
            ),
            403,
            "forbidden",
        ),
        (Failure(Code.NOT_FOUND, "no such code", reason="not_found"), 404, "not_found"),
        (
            Failure(Code.ALREADY_EXISTS, "key already linked", reason="conflict"),
            409,
            "conflict",
        ),
        (
            Failure(Code.FAILED_PRECONDITION, "code expired", reason="expired"),
            410,
            "expired",
        ),
        (
            Failure(
                Code.RESOURCE_EXHAUSTED, "no address left", reason="resource_exhausted"
            ),
            409,
            "resource_exhausted",
        ),
        (
            Failure(
                Code.RESOURCE_EXHAUSTED,
                "slow down",
                reason="rate_limited",
                retry_after="7",
            ),
            429,
            "rate_limited",
        ),
        (Failure(Code.FAILED_PRECONDITION, "no", reason="conflict"), 409, "conflict"),
        (Failure(Code.NOT_FOUND, "gone", reason="not-a-known-code"), 404, "not_found"),
    ],
    ids=lambda value: value.details if isinstance(value, Failure) else str(value),
)
async def test_a_coordinator_error_with_a_reason_shows_its_message(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    failure: Failure,
    status: int,
    code: str,
) -> None:
    fake.replies["ApproveLink"] = failure

    response = await client.post(
        "/v1/runmesh/devices/link/approve", json={"code": "KX7T9Q"}
    )

    error = assert_error(response, status, code)
    assert error["message"] == failure.details


@pytest.mark.parametrize(
    ("failure", "status", "code", "message"),
    [
        (
            Failure(
                Code.RESOURCE_EXHAUSTED,
                "received metadata size exceeds soft limit (12722 vs. 8192) "
                ":path:71B authorization:12009B",
            ),
            409,
            "resource_exhausted",
            "the request could not be processed",
        ),
        (
            Failure(Code.INVALID_ARGUMENT, "grpc: error unmarshalling request"),
            400,
            "invalid_request",
            "the request could not be processed",
        ),
        (
            Failure(Code.UNAUTHENTICATED, "proxy: token for 10.0.0.3 expired"),
            401,
            "unauthorized",
            "a valid API key is required",
        ),
        (
            Failure(Code.NOT_FOUND, "no route to /runmesh.v1.AdminService"),
            404,
            "not_found",
            "not found",
        ),
        (
            Failure(Code.ABORTED, "stream reset by envoy"),
            409,
            "conflict",
            "the request conflicts with the current state",
        ),
        (
            Failure(Code.RESOURCE_EXHAUSTED, "envoy: overloaded", retry_after="5"),
            429,
            "rate_limited",
            "too many requests; retry after the given delay",
        ),
    ],
    ids=lambda value: value.code.name if isinstance(value, Failure) else str(value),
)
async def test_a_status_without_a_reason_hides_its_details_and_logs_them(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    caplog: pytest.LogCaptureFixture,
    failure: Failure,
    status: int,
    code: str,
    message: str,
) -> None:
    fake.replies["ApproveLink"] = failure

    response = await client.post(
        "/v1/runmesh/devices/link/approve", json={"code": "KX7T9Q"}
    )

    error = assert_error(response, status, code)
    assert error["message"] == message
    assert failure.details not in response.text
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "gateway.errors"]
    assert failure.details in logged
    assert error["requestId"] in logged


@pytest.mark.parametrize(
    ("failure", "retry_after"),
    [
        (Failure(Code.RESOURCE_EXHAUSTED, "poll slower", retry_after="5"), "5"),
        # The reason alone makes it a rate limit; the delay then defaults.
        (Failure(Code.UNAVAILABLE, "poll slower", reason="rate_limited"), "1"),
        (
            Failure(
                Code.RESOURCE_EXHAUSTED, "x", reason="rate_limited", retry_after="2.2"
            ),
            "3",
        ),
    ],
)
async def test_rate_limited_always_carries_retry_after(
    client: httpx.AsyncClient, fake: FakeCoordinator, failure: Failure, retry_after: str
) -> None:
    fake.replies["PollLink"] = failure

    response = await client.post(
        "/v1/runmesh/devices/link/poll", json={"code": "KX7T9Q", "publicKey": KEY}
    )

    assert_error(response, 429, "rate_limited")
    assert response.headers["retry-after"] == retry_after


@pytest.mark.parametrize(
    "failure",
    [
        Failure(Code.INTERNAL, "Traceback: /srv/coordinator/db.py line 3"),
        Failure(Code.UNKNOWN, "Exception calling application: KeyError"),
        Failure(Code.UNIMPLEMENTED, "Method not found!"),
        Failure(Code.DATA_LOSS, "disk"),
    ],
    ids=lambda failure: failure.code.name,
)
async def test_other_statuses_are_internal_and_hide_the_details(
    client: httpx.AsyncClient, fake: FakeCoordinator, failure: Failure
) -> None:
    fake.replies["GetNode"] = failure

    response = await client.get("/v1/runmesh/nodes/node_x")

    error = assert_error(response, 500, "internal")
    assert error["message"] == "internal error"
    assert failure.details not in response.text


async def test_unavailable_coordinator_answer_is_503(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNode"] = Failure(Code.UNAVAILABLE, "draining at 10.0.0.3")

    response = await client.get("/v1/runmesh/nodes/node_x")

    error = assert_error(response, 503, "unavailable")
    assert "10.0.0.3" not in error["message"]


async def test_coordinator_down_is_503_unavailable() -> None:
    async with open_gateway(f"127.0.0.1:{free_port()}") as client:
        response = await client.get("/v1/runmesh/nodes")

    error = assert_error(response, 503, "unavailable")
    assert error["message"] == "the coordinator is unavailable; retry later"


async def test_a_coordinator_slower_than_the_deadline_is_503(
    fake: FakeCoordinator,
) -> None:
    async def stall() -> None:
        await asyncio.sleep(2)

    fake.before_answer = stall

    async with open_gateway(fake.target, deadline=0.2) as client:
        response = await client.get("/v1/runmesh/nodes")

    assert_error(response, 503, "unavailable")


async def test_an_empty_4xx_message_gets_a_default(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNode"] = Failure(Code.NOT_FOUND)

    error = assert_error(await client.get("/v1/runmesh/nodes/node_x"), 404, "not_found")

    assert error["message"] == "not found"

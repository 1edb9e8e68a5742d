"""Requests refused by the gateway itself: shape, size and routing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_fakes import KEY, FakeCoordinator, assert_error, sample_node

from gateway import convert

pytestmark = pytest.mark.anyio

START = "/v1/runmesh/devices/link/start"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "publicKey: field required"),
        ({"publicKey": 42}, "publicKey: input should be a valid string"),
        (
            {"publicKey": "k" * 101},
            "publicKey: string should have at most 44 characters",
        ),
        (
            {"publicKey": KEY, "deviceLabel": "x" * 257},
            "deviceLabel: string should have at most 256 characters",
        ),
        (
            {"publicKey": KEY, "clientMetadata": ["not", "an", "object"]},
            "clientMetadata: input should be a valid dictionary",
        ),
        (
            {"publicKey": KEY, "clientMetadata": {"blob": "x" * 5000}},
            "clientMetadata: must be at most 4096 bytes as JSON",
        ),
        ([{"publicKey": KEY}], "body must be a JSON object"),
        ("just a string", "body must be a JSON object"),
    ],
)
async def test_shape_errors_name_the_field(
    client: httpx.AsyncClient, fake: FakeCoordinator, body: object, message: str
) -> None:
    response = await client.post(START, json=body)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == message
    assert fake.calls == []


async def test_a_body_that_is_not_json_is_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        START, content=b"{publicKey: nope", headers={"content-type": "application/json"}
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "body is not valid JSON"


async def test_no_body_at_all_is_invalid_request(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.post(START), 400, "invalid_request")

    assert error["message"] == "body must be a JSON object"


async def test_several_problems_are_all_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/runmesh/devices/link/poll", json={"code": 1})

    error = assert_error(response, 400, "invalid_request")
    assert (
        error["message"]
        == "code: input should be a valid string; publicKey: field required"
    )


async def test_a_body_over_64_kib_is_refused_with_413_before_parsing(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    response = await client.post(START, json={"publicKey": KEY, "pad": "x" * 70_000})

    error = assert_error(response, 413, "invalid_request")
    assert "65536" in error["message"]
    assert fake.calls == []


async def test_a_streamed_body_over_64_kib_is_refused_without_content_length(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 4096

    response = await client.post(
        START, content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert_error(response, 413, "invalid_request")
    assert fake.calls == []


async def test_a_body_just_under_the_cap_goes_through_to_validation(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(START, json={"pad": "x" * 60_000})

    assert_error(response, 400, "invalid_request")


async def test_unknown_route_is_not_found_in_the_envelope(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/runmesh/nope")

    assert_error(response, 404, "not_found")


async def test_wrong_method_is_405_invalid_request_with_allow(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(START)

    assert_error(response, 405, "invalid_request")
    assert response.headers["allow"] == "POST"


async def test_every_request_gets_its_own_id(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    ids = {(await client.get("/nope")).headers["x-request-id"] for _ in range(5)}

    assert len(ids) == 5


async def test_a_client_supplied_request_id_is_not_reused(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/nope", headers={"X-Request-Id": "req_mine"})

    assert response.headers["x-request-id"] != "req_mine"


async def test_json_without_a_json_content_type_is_named_as_such(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        START,
        content=b'{"publicKey": "k"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    error = assert_error(response, 400, "invalid_request")
    assert "Content-Type: application/json" in error["message"]


async def test_a_crash_in_the_gateway_is_internal_with_a_request_id_and_no_traceback(
    client: httpx.AsyncClient, fake: FakeCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(_: object) -> None:
        raise RuntimeError("secret detail /etc/runmesh")

    monkeypatch.setattr(convert, "node", crash)
    fake.replies["GetNode"] = sample_node()

    response = await client.get("/v1/runmesh/nodes/node_x")

    error = assert_error(response, 500, "internal")
    assert error["message"] == "internal error"
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_a_wrong_method_lists_every_method_of_the_path_in_allow(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put("/v1/runmesh/nodes/node_x", json={"name": "ada"})

    assert_error(response, 405, "invalid_request")
    assert response.headers["allow"] == "DELETE, GET, PATCH"


async def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    response = await client.delete("/v1/runmesh/nodes/")

    assert_error(response, 404, "not_found")
    assert fake.calls == []

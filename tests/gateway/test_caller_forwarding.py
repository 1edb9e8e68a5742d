"""What the gateway tells the coordinator about the caller, as gRPC metadata."""

from __future__ import annotations

import re

import httpx
import pytest
from gateway_fakes import API_KEY, KEY, FakeCoordinator, assert_error, sample_node

from runmesh.v1 import admin_pb2, mesh_pb2

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def node_list(fake: FakeCoordinator) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse(nodes=[sample_node()])


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": API_KEY},
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"bearer   {API_KEY}  "},
    ],
    ids=["x-api-key", "authorization-bearer", "lowercase-scheme"],
)
async def test_either_header_reaches_the_coordinator_as_bearer_metadata(
    client: httpx.AsyncClient, fake: FakeCoordinator, headers: dict[str, str]
) -> None:
    await client.get("/v1/runmesh/nodes", headers=headers)

    assert fake.last.metadata["authorization"] == f"Bearer {API_KEY}"


async def test_x_api_key_wins_when_both_are_sent(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    headers = {"X-API-Key": API_KEY, "Authorization": "Bearer rt_live_other"}

    await client.get("/v1/runmesh/nodes", headers=headers)

    assert fake.last.metadata["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}],
    ids=["none", "basic", "empty-bearer"],
)
async def test_no_usable_credential_forwards_none_and_lets_the_coordinator_decide(
    client: httpx.AsyncClient, fake: FakeCoordinator, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/runmesh/nodes", headers=headers)

    assert response.status_code == 200  # the fake accepts anyone
    assert "authorization" not in fake.last.metadata


async def test_request_id_and_client_address_are_forwarded(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    response = await client.get("/v1/runmesh/nodes")

    assert fake.last.metadata["x-request-id"] == response.headers["x-request-id"]
    # httpx's ASGITransport presents the client as 127.0.0.1.
    assert fake.last.metadata["x-runmesh-client-addr"] == "127.0.0.1"


LONG_KEY = "rt_live_" + "k" * 12_000

# Every route that takes a key, with a body it would accept.
KEYED_ROUTES = [
    ("GET", "/v1/runmesh/overview", None),
    ("GET", "/v1/runmesh/nodes", None),
    ("GET", "/v1/runmesh/nodes/node_x", None),
    ("GET", "/v1/runmesh/nodes/node_x/config", None),
    ("PATCH", "/v1/runmesh/nodes/node_x", {"name": "ada"}),
    ("DELETE", "/v1/runmesh/nodes/node_x", None),
    ("POST", "/v1/runmesh/nodes/node_x/revoke", None),
    ("GET", "/v1/runmesh/audit", None),
    ("GET", "/v1/runmesh/devices/node_x/activity", None),
    ("POST", "/v1/runmesh/devices/link/approve", {"code": "KX7T9Q"}),
]
KEYLESS_PATHS = {
    "/v1/runmesh/devices/link/start",
    "/v1/runmesh/devices/link/poll",
    # The probes: a supervisor or a load balancer holds no API key.
    "/healthz",
    "/readyz",
}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": LONG_KEY},
        {"Authorization": f"Bearer {LONG_KEY}"},
        {"X-API-Key": "k" * 129},
        {"X-API-Key": "rt_live_with space"},
        {"X-API-Key": b"rt_live_\xe9t\xe9"},
        {"Authorization": "Bearer rt_live_\x7f"},
    ],
    ids=["12k-x-api-key", "12k-bearer", "129-chars", "space", "latin-1", "del"],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    KEYED_ROUTES,
    ids=[f"{m} {p}" for m, p, _ in KEYED_ROUTES],
)
async def test_a_key_no_key_can_be_is_unauthorized_without_calling_the_coordinator(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    headers: dict[str, str | bytes],
    method: str,
    path: str,
    body: object,
) -> None:
    response = await client.request(method, path, json=body, headers=headers)

    error = assert_error(response, 401, "unauthorized")
    assert error["message"] == "the API key is not valid"
    assert fake.calls == []


async def test_every_route_but_start_and_poll_is_checked_for_its_key(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    documented = {
        (method.upper(), re.sub(r"\{id\}", "node_x", path))
        for path, operations in paths.items()
        if path not in KEYLESS_PATHS
        for method in operations
    }

    assert documented == {(method, path) for method, path, _ in KEYED_ROUTES}


async def test_a_key_of_128_visible_characters_still_reaches_the_coordinator(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    key = "rt_live_" + "~!" * 60

    response = await client.get("/v1/runmesh/nodes", headers={"X-API-Key": key})

    assert response.status_code == 200
    assert fake.last.metadata["authorization"] == f"Bearer {key}"


@pytest.mark.parametrize(
    ("path", "body", "reply"),
    [
        (
            "/v1/runmesh/devices/link/start",
            {"publicKey": KEY},
            mesh_pb2.StartLinkResponse(code="KX7T9Q"),
        ),
        (
            "/v1/runmesh/devices/link/poll",
            {"code": "KX7T9Q", "publicKey": KEY},
            mesh_pb2.PollLinkResponse(status=mesh_pb2.LINK_STATUS_PENDING),
        ),
    ],
    ids=["start", "poll"],
)
@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": LONG_KEY},
        {"Authorization": f"Bearer {LONG_KEY}"},
        {"X-API-Key": API_KEY},
    ],
    ids=["12k-x-api-key", "12k-bearer", "valid-key"],
)
async def test_link_start_and_poll_ignore_a_key_and_do_not_forward_it(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    path: str,
    body: dict[str, str],
    reply: object,
    headers: dict[str, str],
) -> None:
    fake.replies[path.rsplit("/", 1)[1].capitalize() + "Link"] = reply

    response = await client.post(path, json=body, headers=headers)

    assert response.status_code in (200, 201), response.text
    assert "authorization" not in fake.last.metadata

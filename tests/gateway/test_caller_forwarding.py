"""What the gateway tells the coordinator about the caller, as gRPC metadata."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import API_KEY, FakeCoordinator, sample_node

from runmesh.v1 import admin_pb2

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

"""Link routes translated to MeshService/AdminService calls and back."""

from __future__ import annotations

import re

import httpx
import pytest
from gateway_fakes import KEY, FakeCoordinator, sample_node, timestamp

from runmesh.v1 import mesh_pb2, node_pb2

pytestmark = pytest.mark.anyio

REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")


def started() -> mesh_pb2.StartLinkResponse:
    return mesh_pb2.StartLinkResponse(
        code="KX7T9Q",
        url="https://mesh.example.com/link/KX7T9Q",
        expires_at=timestamp("2026-12-03T18:34:39Z", nanos=5_000_000),
        interval_seconds=5,
    )


async def test_start_answers_201_with_the_code_in_the_envelope(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["StartLink"] = started()

    response = await client.post(
        "/v1/runmesh/devices/link/start", json={"publicKey": KEY}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["data"] == {
        "code": "KX7T9Q",
        "url": "https://mesh.example.com/link/KX7T9Q",
        "expiresAt": "2026-12-03T18:34:39.005Z",
        "interval": 5,
    }
    assert REQUEST_ID.match(body["meta"]["requestId"])
    assert response.headers["x-request-id"] == body["meta"]["requestId"]


async def test_start_forwards_every_field_in_snake_case(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["StartLink"] = started()
    body = {
        "publicKey": KEY,
        "deviceLabel": "Ada's MacBook",
        "os": "macos",
        "appVersion": "1.4.2",
        "hostname": "adas-mbp",
        "clientMetadata": {"arch": "arm64", "cores": 10, "tags": ["a", None, True]},
        "futureField": "ignored, not refused",
    }

    response = await client.post("/v1/runmesh/devices/link/start", json=body)

    assert response.status_code == 201
    sent = fake.last.request
    assert (sent.public_key, sent.device_label, sent.os) == (
        KEY,
        "Ada's MacBook",
        "macos",
    )
    assert (sent.app_version, sent.hostname) == ("1.4.2", "adas-mbp")
    metadata = sent.client_metadata
    assert metadata["arch"] == "arm64"
    assert metadata["cores"] == 10
    assert list(metadata["tags"]) == ["a", None, True]


async def test_start_sends_absent_optional_fields_as_empty(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["StartLink"] = started()

    await client.post(
        "/v1/runmesh/devices/link/start", json={"publicKey": KEY, "deviceLabel": None}
    )

    sent = fake.last.request
    assert sent.device_label == "" and sent.hostname == ""
    assert not sent.HasField("client_metadata")


async def test_poll_pending_has_no_node_and_no_coordinator(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["PollLink"] = mesh_pb2.PollLinkResponse(
        status=mesh_pb2.LINK_STATUS_PENDING,
        expires_at=timestamp("2026-12-03T18:34:39Z"),
        interval_seconds=5,
    )

    response = await client.post(
        "/v1/runmesh/devices/link/poll", json={"code": "kx7t9q", "publicKey": KEY}
    )

    assert response.status_code == 200
    assert response.json()["data"] == {
        "status": "pending",
        "expiresAt": "2026-12-03T18:34:39.000Z",
        "interval": 5,
        "node": None,
        "coordinator": None,
    }
    assert (fake.last.request.code, fake.last.request.public_key) == ("kx7t9q", KEY)


async def test_poll_approved_carries_the_node_and_where_to_sync(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["PollLink"] = mesh_pb2.PollLinkResponse(
        status=mesh_pb2.LINK_STATUS_APPROVED,
        interval_seconds=5,
        node=sample_node(),
        coordinator=mesh_pb2.CoordinatorEndpoint(
            target="mesh.example.com:50443", public_key=KEY
        ),
    )

    response = await client.post(
        "/v1/runmesh/devices/link/poll", json={"code": "KX7T9Q", "publicKey": KEY}
    )

    data = response.json()["data"]
    assert data["status"] == "approved"
    assert data["expiresAt"] is None
    assert data["node"]["id"] == "node_7h3k2m9x"
    assert data["coordinator"] == {"target": "mesh.example.com:50443", "publicKey": KEY}


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (mesh_pb2.LINK_STATUS_EXPIRED, "expired"),
        (mesh_pb2.LINK_STATUS_DENIED, "denied"),
    ],
)
async def test_poll_ends_are_states_not_errors(
    client: httpx.AsyncClient, fake: FakeCoordinator, status: int, text: str
) -> None:
    fake.replies["PollLink"] = mesh_pb2.PollLinkResponse(
        status=status, interval_seconds=5
    )

    response = await client.post(
        "/v1/runmesh/devices/link/poll", json={"code": "KX7T9Q", "publicKey": KEY}
    )

    assert response.status_code == 200
    assert response.json()["data"]["status"] == text


async def test_approve_forwards_code_and_name_and_returns_the_node(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ApproveLink"] = sample_node(status=node_pb2.NODE_STATUS_OFFLINE)

    response = await client.post(
        "/v1/runmesh/devices/link/approve",
        json={"code": "KX7T9Q", "name": "ada-laptop"},
        headers={"X-API-Key": "rt_live_x"},
    )

    assert response.status_code == 200
    assert response.json()["data"]["status"] == "offline"
    assert (fake.last.request.code, fake.last.request.name) == ("KX7T9Q", "ada-laptop")


async def test_approve_without_name_sends_empty_name(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ApproveLink"] = sample_node()

    await client.post("/v1/runmesh/devices/link/approve", json={"code": "KX7T9Q"})

    assert fake.last.request.name == ""

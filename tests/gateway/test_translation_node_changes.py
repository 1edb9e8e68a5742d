"""Renaming and revoking a node: the body, the request sent, the node answered."""

from __future__ import annotations

import grpc
import httpx
import pytest
from gateway_fakes import Failure, FakeCoordinator, assert_error, sample_node, timestamp

from runmesh.v1 import node_pb2

pytestmark = pytest.mark.anyio

NODE = "/v1/runmesh/nodes/node_7h3k2m9x"


def revoked_node() -> node_pb2.Node:
    return sample_node(
        status=node_pb2.NODE_STATUS_REVOKED,
        revoked_at=timestamp("2027-01-01T00:00:00Z"),
    )


async def test_patch_renames_and_answers_the_node(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["RenameNode"] = sample_node(name="ada-desk")

    response = await client.patch(NODE, json={"name": "ada-desk"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"]["name"] == "ada-desk"
    assert body["meta"] == {"requestId": response.headers["x-request-id"]}
    sent = fake.last
    assert sent.method == "RenameNode"
    assert (sent.request.id, sent.request.name) == ("node_7h3k2m9x", "ada-desk")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "name: field required"),
        ({"name": 7}, "name: input should be a valid string"),
        ({"name": ""}, "name: string should have at least 1 character"),
        ({"name": "n" * 64}, "name: string should have at most 63 characters"),
        (["ada"], "body must be a JSON object"),
    ],
)
async def test_a_rename_of_the_wrong_shape_is_invalid_request(
    client: httpx.AsyncClient, fake: FakeCoordinator, body: object, message: str
) -> None:
    response = await client.patch(NODE, json=body)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == message
    assert fake.calls == []


async def test_a_name_the_coordinator_refuses_is_its_own_message(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["RenameNode"] = Failure(
        grpc.StatusCode.INVALID_ARGUMENT,
        "name: must be a DNS label",
        reason="invalid_request",
    )

    error = assert_error(
        await client.patch(NODE, json={"name": "Ada_Desk"}), 400, "invalid_request"
    )

    assert error["message"] == "name: must be a DNS label"


async def test_a_name_already_taken_is_conflict(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["RenameNode"] = Failure(
        grpc.StatusCode.ALREADY_EXISTS, "an active node is already named 'ada'"
    )

    assert_error(await client.patch(NODE, json={"name": "ada"}), 409, "conflict")


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("DELETE", NODE, None),
        ("POST", f"{NODE}/revoke", None),
        ("POST", f"{NODE}/revoke", b"{}"),
        ("DELETE", NODE, b"{}"),
    ],
    ids=["delete", "post revoke", "post revoke with {}", "delete with {}"],
)
async def test_delete_and_post_revoke_are_the_same_call(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    method: str,
    path: str,
    content: bytes | None,
) -> None:
    fake.replies["RevokeNode"] = revoked_node()
    headers = {"content-type": "application/json"} if content else {}

    response = await client.request(method, path, content=content, headers=headers)

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["revokedAt"]) == (
        "revoked",
        "2027-01-01T00:00:00.000Z",
    )
    assert fake.last.method == "RevokeNode"
    assert fake.last.request.id == "node_7h3k2m9x"


async def test_revoking_another_orgs_node_is_not_found(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["RevokeNode"] = Failure(grpc.StatusCode.NOT_FOUND, "no such node")

    assert_error(await client.delete(NODE), 404, "not_found")


async def test_revoking_without_the_right_is_forbidden(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["RevokeNode"] = Failure(
        grpc.StatusCode.PERMISSION_DENIED,
        "only an admin or the node's owner",
        reason="forbidden",
    )

    error = assert_error(await client.post(f"{NODE}/revoke"), 403, "forbidden")

    assert error["message"] == "only an admin or the node's owner"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/v1/runmesh/nodes/" + "n" * 129),
        ("DELETE", "/v1/runmesh/nodes/" + "n" * 129),
        ("POST", "/v1/runmesh/nodes/" + "n" * 129 + "/revoke"),
        ("GET", "/v1/runmesh/nodes/" + "n" * 129 + "/config"),
        ("GET", "/v1/runmesh/devices/" + "n" * 129 + "/activity"),
    ],
)
async def test_an_id_over_128_characters_is_refused_on_every_node_route(
    client: httpx.AsyncClient, fake: FakeCoordinator, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"name": "ada"})

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "id: string should have at most 128 characters"
    assert fake.calls == []

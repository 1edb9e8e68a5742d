"""Node routes: the node object's JSON, times, pagination and its query."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import KEY, FakeCoordinator, assert_error, sample_node, timestamp

from runmesh.v1 import admin_pb2, node_pb2

pytestmark = pytest.mark.anyio


async def test_node_object_is_camel_case_with_millisecond_utc_times(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNode"] = sample_node()

    response = await client.get("/v1/runmesh/nodes/node_7h3k2m9x")

    assert response.status_code == 200
    assert response.json()["data"] == {
        "id": "node_7h3k2m9x",
        "orgId": "org_q4r8t2",
        "name": "ada-laptop",
        "deviceLabel": "Ada's MacBook",
        "hostname": "adas-mbp",
        "os": "macos",
        "appVersion": "1.4.2",
        "publicKey": KEY,
        "ipv4": "100.64.0.7",
        "ipv6": "fd7a:115c:a1e0::7",
        "status": "online",
        "ownerUserId": "user_m2n6p1",
        "endpoints": ["203.0.113.7:51820"],
        # 123,456,789 ns is truncated, never rounded up, to milliseconds.
        "createdAt": "2026-12-03T18:24:39.123Z",
        "lastSeenAt": "2026-12-04T09:00:00.000Z",
        "revokedAt": None,
    }
    assert fake.last.request.id == "node_7h3k2m9x"


async def test_a_revoked_node_shows_when_it_was_revoked(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNode"] = sample_node(
        status=node_pb2.NODE_STATUS_REVOKED,
        revoked_at=timestamp("2027-01-01T00:00:00Z", nanos=999_999_999),
    )

    data = (await client.get("/v1/runmesh/nodes/node_7h3k2m9x")).json()["data"]

    assert data["status"] == "revoked"
    assert data["revokedAt"] == "2027-01-01T00:00:00.999Z"


async def test_a_timestamp_left_at_its_default_is_null(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNode"] = sample_node(
        last_seen_at=timestamp("1970-01-01T00:00:00Z")
    )

    data = (await client.get("/v1/runmesh/nodes/node_7h3k2m9x")).json()["data"]

    assert data["lastSeenAt"] is None


async def test_list_defaults_to_fifty_active_nodes(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse(nodes=[sample_node()])

    response = await client.get("/v1/runmesh/nodes")

    body = response.json()
    assert response.status_code == 200
    assert [node["id"] for node in body["data"]] == ["node_7h3k2m9x"]
    assert body["meta"] == {
        "requestId": response.headers["x-request-id"],
        "hasMore": False,
        "nextCursor": None,
    }
    sent = fake.last.request
    assert (sent.limit, sent.cursor, sent.include_revoked) == (50, "", False)


async def test_list_forwards_limit_cursor_and_all(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse(
        nodes=[sample_node(), sample_node(id="node_b")], next_cursor="c2", has_more=True
    )

    response = await client.get(
        "/v1/runmesh/nodes", params={"limit": "2", "cursor": "c1", "all": "true"}
    )

    meta = response.json()["meta"]
    assert (meta["hasMore"], meta["nextCursor"]) == (True, "c2")
    sent = fake.last.request
    assert (sent.limit, sent.cursor, sent.include_revoked) == (2, "c1", True)


async def test_an_empty_page_is_an_empty_list(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse()

    body = (await client.get("/v1/runmesh/nodes")).json()

    assert body["data"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"all": "perhaps"}, "all"),
    ],
)
async def test_bad_list_query_is_invalid_request_naming_the_parameter(
    client: httpx.AsyncClient, fake: FakeCoordinator, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/runmesh/nodes", params=params)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"].startswith(f"{field}: ")
    assert fake.calls == []


async def test_an_unknown_node_status_is_internal_not_a_guess(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNode"] = sample_node(status=node_pb2.NODE_STATUS_UNSPECIFIED)

    response = await client.get("/v1/runmesh/nodes/node_7h3k2m9x")

    error = assert_error(response, 500, "internal")
    assert error["message"] == "internal error"


async def test_list_forwards_owner_name_and_ip_filters(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse(nodes=[sample_node()])

    response = await client.get(
        "/v1/runmesh/nodes",
        params={"owner": "me", "name": "ada-", "ip": "fd7a:115c:a1e0::7"},
    )

    assert response.status_code == 200, response.text
    sent = fake.last.request
    assert sent.owned_by_caller is True
    assert (sent.name_prefix, sent.ip) == ("ada-", "fd7a:115c:a1e0::7")


async def test_list_without_filters_sends_none(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse()

    await client.get("/v1/runmesh/nodes")

    sent = fake.last.request
    assert (sent.owned_by_caller, sent.name_prefix, sent.ip) == (False, "", "")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"owner": "you"}, "owner: input should be 'me'"),
        ({"owner": "user_m2n6p1"}, "owner: input should be 'me'"),
        ({"name": "n" * 64}, "name: string should have at most 63 characters"),
        ({"ip": "1" * 65}, "ip: string should have at most 64 characters"),
        ({"cursor": "c" * 1025}, "cursor: string should have at most 1024 characters"),
    ],
)
async def test_bad_list_filter_is_invalid_request_saying_what_is_wrong(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    params: dict[str, str],
    message: str,
) -> None:
    response = await client.get("/v1/runmesh/nodes", params=params)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == message
    assert fake.calls == []

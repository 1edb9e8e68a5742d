"""Overview counts, audit events and device activity: shapes and filters."""

from __future__ import annotations

import grpc
import httpx
import pytest
from gateway_fakes import Failure, FakeCoordinator, assert_error, timestamp
from google.protobuf import struct_pb2

from runmesh.v1 import admin_pb2

pytestmark = pytest.mark.anyio

AUDIT = "/v1/runmesh/audit"
ACTIVITY = "/v1/runmesh/devices/node_7h3k2m9x/activity"


def struct(**values: object) -> struct_pb2.Struct:
    attributes = struct_pb2.Struct()
    attributes.update(values)
    return attributes


def sample_event(**overrides: object) -> admin_pb2.AuditEvent:
    fields: dict[str, object] = dict(
        id="aud_1",
        org_id="org_q4r8t2",
        actor_type="apiKey",
        actor_id="key_8c1d5e",
        action="node.renamed",
        target_type="node",
        target_id="node_7h3k2m9x",
        attributes=struct(**{"from": "ada", "to": "ada-desk", "port": 51820}),
        created_at=timestamp("2026-12-03T18:24:39Z", nanos=5_000_000),
    )
    fields.update(overrides)
    return admin_pb2.AuditEvent(**fields)  # type: ignore[arg-type]


def sample_activity() -> admin_pb2.DeviceActivity:
    return admin_pb2.DeviceActivity(
        id="act_1",
        resource_type="runmesh_device",
        resource_id="node_7h3k2m9x",
        event_type="runmesh.node.connected",
        severity="info",
        status="online",
        title="ada-laptop connected",
        summary="from 203.0.113.7:51820",
        attributes=struct(endpoint="203.0.113.7:51820", ratio=0.5),
        created_at=timestamp("2026-12-04T09:00:00Z"),
    )


# ---- overview ----


async def test_overview_counts_with_unknown_os_named(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetOverview"] = admin_pb2.Overview(
        total=9, online=4, offline=3, revoked=2, by_os={"macos": 5, "": 1, "linux": 1}
    )

    response = await client.get("/v1/runmesh/overview")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": {
            "total": 9,
            "online": 4,
            "offline": 3,
            "revoked": 2,
            "byOs": {"macos": 5, "unknown": 1, "linux": 1},
        },
        "meta": {"requestId": response.headers["x-request-id"]},
    }
    assert fake.last.method == "GetOverview"


async def test_an_os_named_unknown_and_an_empty_one_are_counted_together(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetOverview"] = admin_pb2.Overview(by_os={"": 2, "unknown": 3})

    data = (await client.get("/v1/runmesh/overview")).json()["data"]

    assert data["byOs"] == {"unknown": 5}


async def test_overview_without_the_scope_is_forbidden(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetOverview"] = Failure(
        grpc.StatusCode.PERMISSION_DENIED,
        "scope runmesh:read needed",
        reason="forbidden",
    )

    assert_error(await client.get("/v1/runmesh/overview"), 403, "forbidden")


# ---- audit ----


async def test_audit_events_are_camel_case_with_attributes_as_an_object(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListAuditEvents"] = admin_pb2.ListAuditEventsResponse(
        events=[sample_event()], next_cursor="c2", has_more=True
    )

    response = await client.get(AUDIT)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == [
        {
            "id": "aud_1",
            "orgId": "org_q4r8t2",
            "actorType": "apiKey",
            "actorId": "key_8c1d5e",
            "action": "node.renamed",
            "targetType": "node",
            "targetId": "node_7h3k2m9x",
            # Whole numbers come back as integers, not Struct's doubles.
            "attributes": {"from": "ada", "to": "ada-desk", "port": 51820},
            "createdAt": "2026-12-03T18:24:39.005Z",
        }
    ]
    assert body["meta"] == {
        "requestId": response.headers["x-request-id"],
        "hasMore": True,
        "nextCursor": "c2",
    }


async def test_an_event_without_attributes_or_time_has_empty_and_null(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    event = sample_event()
    event.ClearField("attributes")
    event.ClearField("created_at")
    fake.replies["ListAuditEvents"] = admin_pb2.ListAuditEventsResponse(events=[event])

    data = (await client.get(AUDIT)).json()["data"]

    assert (data[0]["attributes"], data[0]["createdAt"]) == ({}, None)


async def test_audit_defaults_to_fifty_without_filters(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListAuditEvents"] = admin_pb2.ListAuditEventsResponse()

    body = (await client.get(AUDIT)).json()

    assert body["data"] == [] and body["meta"]["nextCursor"] is None
    sent = fake.last.request
    assert (sent.limit, sent.cursor, sent.action) == (50, "", "")
    assert not sent.HasField("since") and not sent.HasField("until")


async def test_audit_forwards_paging_window_and_action(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListAuditEvents"] = admin_pb2.ListAuditEventsResponse()

    await client.get(
        AUDIT,
        params={
            "limit": "10",
            "cursor": "c1",
            "since": "2026-12-03T19:24:39.250+01:00",
            # No offset: UTC.
            "until": "2026-12-04T00:00:00",
            "action": "node.revoked",
        },
    )

    sent = fake.last.request
    assert (sent.limit, sent.cursor, sent.action) == (10, "c1", "node.revoked")
    assert sent.since.ToJsonString() == "2026-12-03T18:24:39.250Z"
    assert sent.until.ToJsonString() == "2026-12-04T00:00:00Z"


async def test_a_bound_beyond_the_calendar_in_utc_is_the_calendars_end(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListAuditEvents"] = admin_pb2.ListAuditEventsResponse()

    response = await client.get(
        AUDIT,
        params={
            "since": "0001-01-01T00:00:00+01:00",
            "until": "9999-12-31T23:59:59-01:00",
        },
    )

    assert response.status_code == 200, response.text
    sent = fake.last.request
    assert sent.since.ToJsonString() == "0001-01-01T00:00:00Z"
    assert sent.until.ToJsonString() == "9999-12-31T23:59:59.999999Z"


TIME_MESSAGE = "must be an ISO 8601 date-time such as 2026-12-03T18:24:39Z"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, f"since: {TIME_MESSAGE}"),
        ({"until": "1764786279"}, f"until: {TIME_MESSAGE}"),
        ({"since": "2026-12-03"}, f"since: {TIME_MESSAGE}"),
        ({"since": "2026-13-03T00:00:00Z"}, f"since: {TIME_MESSAGE}"),
        ({"action": "a" * 65}, "action: string should have at most 64 characters"),
        ({"limit": "0"}, "limit: input should be greater than or equal to 1"),
        ({"limit": "501"}, "limit: input should be less than or equal to 500"),
    ],
)
async def test_bad_audit_query_is_invalid_request_saying_what_is_wrong(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    params: dict[str, str],
    message: str,
) -> None:
    response = await client.get(AUDIT, params=params)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == message
    assert fake.calls == []


async def test_a_window_the_coordinator_refuses_is_invalid_request(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListAuditEvents"] = Failure(
        grpc.StatusCode.INVALID_ARGUMENT,
        "since must not be after until",
        reason="invalid_request",
    )

    response = await client.get(
        AUDIT, params={"since": "2027-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "since must not be after until"


# ---- device activity ----


async def test_device_activity_shape_and_request(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ListDeviceActivity"] = admin_pb2.ListDeviceActivityResponse(
        activities=[sample_activity()], has_more=False
    )

    response = await client.get(
        ACTIVITY,
        params={
            "limit": "5",
            "cursor": "c1",
            "since": "2026-12-04 08:00",
            "until": "2026-12-04t10:00:00z",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {
            "id": "act_1",
            "resourceType": "runmesh_device",
            "resourceId": "node_7h3k2m9x",
            "eventType": "runmesh.node.connected",
            "severity": "info",
            "status": "online",
            "title": "ada-laptop connected",
            "summary": "from 203.0.113.7:51820",
            "attributes": {"endpoint": "203.0.113.7:51820", "ratio": 0.5},
            "createdAt": "2026-12-04T09:00:00.000Z",
        }
    ]
    sent = fake.last.request
    assert fake.last.method == "ListDeviceActivity"
    assert (sent.node_id, sent.limit, sent.cursor) == ("node_7h3k2m9x", 5, "c1")
    assert sent.since.ToJsonString() == "2026-12-04T08:00:00Z"
    assert sent.until.ToJsonString() == "2026-12-04T10:00:00Z"


async def test_device_activity_rejects_a_bad_time(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    response = await client.get(ACTIVITY, params={"until": "soon"})

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == f"until: {TIME_MESSAGE}"
    assert fake.calls == []


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (
            Failure(grpc.StatusCode.NOT_FOUND, "no such node", reason="not_found"),
            404,
            "not_found",
        ),
        (
            Failure(
                grpc.StatusCode.PERMISSION_DENIED,
                "scope activity:read needed",
                reason="forbidden",
            ),
            403,
            "forbidden",
        ),
        (
            Failure(
                grpc.StatusCode.UNAUTHENTICATED,
                "unknown API key",
                reason="unauthorized",
            ),
            401,
            "unauthorized",
        ),
    ],
)
async def test_device_activity_errors_are_mapped(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    failure: Failure,
    status: int,
    code: str,
) -> None:
    fake.replies["ListDeviceActivity"] = failure

    error = assert_error(await client.get(ACTIVITY), status, code)

    assert error["message"] == failure.details

"""The REST link flow and node reads through a real gateway and coordinator.

Unlike the translation tests beside this file, nothing here is faked: the
gateway process talks gRPC to a coordinator process with its own database.
One pair of processes serves the module (start-up costs seconds); every test
links devices with fresh keys, so tests do not depend on each other.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.public import PrivateKey
from support.processes import (
    Coordinator,
    Service,
    create_key,
    gateway_client,
    start_coordinator,
    start_gateway,
)

ALPHABET = set("23456789BCDFGHJKMNPQRSTVWXZ")
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass(frozen=True)
class Api:
    coordinator: Coordinator
    gateway: Service
    admin_key: str
    reader_key: str
    other_org_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        return gateway_client(self.gateway, key)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    workdir = Path(tmp_path_factory.mktemp("rest"))
    coordinator = start_coordinator(workdir)
    try:
        gateway = start_gateway(workdir, coordinator.target)
        try:
            yield Api(
                coordinator,
                gateway,
                admin_key=create_key(coordinator.db_url),
                reader_key=create_key(
                    coordinator.db_url, user="reader@acme.test", scopes="runmesh:read"
                ),
                other_org_key=create_key(
                    coordinator.db_url, org="other", user="x@other.test"
                ),
            )
        finally:
            gateway.stop()
    finally:
        coordinator.stop()


def new_public_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def data_of(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert response.headers["X-Request-Id"] == body["meta"]["requestId"]
    return body["data"]


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert error["requestId"] == response.headers["X-Request-Id"]
    return error


def start_link(api: Api, public_key: str | None = None) -> tuple[str, dict[str, Any]]:
    key = public_key or new_public_key()
    with api.client() as client:
        started = client.post(
            "/devices/link/start",
            json={"publicKey": key, "deviceLabel": "Ada's MacBook", "os": "macos"},
        )
    return key, data_of(started, 201)


def approve(api: Api, code: str, key: str | None = None) -> httpx.Response:
    with api.client(key if key is not None else api.admin_key) as client:
        return client.post("/devices/link/approve", json={"code": code})


def poll(api: Api, code: str, public_key: str) -> httpx.Response:
    with api.client() as client:
        return client.post(
            "/devices/link/poll", json={"code": code, "publicKey": public_key}
        )


def linked_node(api: Api) -> dict[str, Any]:
    _, started = start_link(api)
    node: dict[str, Any] = data_of(approve(api, started["code"]), 200)
    return node


# ---- link/start ----


def test_link_start_returns_a_code_url_expiry_and_interval(api: Api) -> None:
    with api.client() as client:
        response = client.post(
            "/devices/link/start", json={"publicKey": new_public_key()}
        )

    started = data_of(response, 201)
    assert len(started["code"]) == 6 and set(started["code"]) <= ALPHABET
    assert started["code"] in started["url"]
    assert ISO_UTC_MS.match(started["expiresAt"]), started["expiresAt"]
    expires = dt.datetime.fromisoformat(started["expiresAt"].replace("Z", "+00:00"))
    left = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=9) < left <= dt.timedelta(minutes=10)
    assert started["interval"] == 1  # the fixture's --link-interval
    assert response.headers["X-Request-Id"].startswith("req_")


@pytest.mark.parametrize(
    ("what", "content"),
    [
        ("publicKey not base64", json.dumps({"publicKey": "not base64 at all!" * 2})),
        (
            "base64 of 31 bytes",
            json.dumps({"publicKey": base64.b64encode(bytes(31)).decode()}),
        ),
        ("no publicKey", json.dumps({"deviceLabel": "laptop"})),
        ("a JSON array", json.dumps([{"publicKey": "x"}])),
        ("not JSON", "publicKey=abc"),
    ],
)
def test_link_start_with_a_bad_body_is_invalid_request(
    api: Api, what: str, content: str
) -> None:
    with api.client() as client:
        response = client.post(
            "/devices/link/start",
            content=content,
            headers={"Content-Type": "application/json"},
        )

    error = error_of(response, 400, "invalid_request")
    assert "Traceback" not in error["message"], what


def test_link_start_for_the_key_of_an_active_node_is_conflict(api: Api) -> None:
    node = linked_node(api)

    with api.client() as client:
        response = client.post(
            "/devices/link/start", json={"publicKey": node["publicKey"]}
        )

    error_of(response, 409, "conflict")


# ---- link/poll ----


def test_a_poll_before_approval_is_pending(api: Api) -> None:
    key, started = start_link(api)

    state = data_of(poll(api, started["code"], key), 200)

    assert state["status"] == "pending"
    assert state["expiresAt"] == started["expiresAt"]
    assert state["interval"] == 1
    assert state["node"] is None and state["coordinator"] is None


def test_a_poll_after_approval_carries_the_node_and_the_coordinator_key(
    api: Api,
) -> None:
    key, started = start_link(api)
    approved = data_of(approve(api, started["code"]), 200)

    state = data_of(poll(api, started["code"].lower(), key), 200)

    assert state["status"] == "approved"
    assert state["node"]["id"] == approved["id"]
    assert state["node"]["publicKey"] == key
    assert state["coordinator"]["target"]
    assert len(base64.b64decode(state["coordinator"]["publicKey"], validate=True)) == 32


def test_a_poll_sooner_than_the_interval_is_rate_limited(api: Api) -> None:
    key, started = start_link(api)
    data_of(poll(api, started["code"], key), 200)

    response = poll(api, started["code"], key)

    error_of(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1


def test_a_poll_with_another_key_is_not_found(api: Api) -> None:
    _, started = start_link(api)

    error_of(poll(api, started["code"], new_public_key()), 404, "not_found")


# ---- link/approve ----


def test_approve_creates_the_node_in_the_callers_org(api: Api) -> None:
    key, started = start_link(api)

    node = data_of(approve(api, started["code"]), 200)

    assert node["id"].startswith("node_")
    assert node["publicKey"] == key
    assert node["status"] == "offline"
    assert node["ipv4"].startswith("100.") and node["ipv6"].startswith("fd")
    assert node["deviceLabel"] == "Ada's MacBook"
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", node["name"])
    assert ISO_UTC_MS.match(node["createdAt"])


def test_approve_without_a_key_is_unauthorized(api: Api) -> None:
    _, started = start_link(api)

    error_of(approve(api, started["code"], key=""), 401, "unauthorized")


def test_approve_with_a_key_lacking_runmesh_write_is_forbidden(api: Api) -> None:
    _, started = start_link(api)

    error_of(approve(api, started["code"], key=api.reader_key), 403, "forbidden")


def test_a_second_approval_is_conflict(api: Api) -> None:
    _, started = start_link(api)
    data_of(approve(api, started["code"]), 200)

    error_of(approve(api, started["code"]), 409, "conflict")


def test_approving_an_unknown_code_is_not_found(api: Api) -> None:
    error_of(approve(api, "ZZZZZZ"), 404, "not_found")


def test_approving_a_malformed_code_is_invalid_request(api: Api) -> None:
    error_of(approve(api, "0OIL1!"), 400, "invalid_request")


# ---- nodes ----


def test_the_node_list_holds_the_orgs_approved_nodes(api: Api) -> None:
    node = linked_node(api)

    with api.client(api.reader_key) as client:
        listed = data_of(client.get("/nodes", params={"limit": 500}), 200)

    assert node["id"] in {n["id"] for n in listed}
    assert {n["orgId"] for n in listed} == {node["orgId"]}


def test_a_node_is_read_by_its_id(api: Api) -> None:
    node = linked_node(api)

    with api.client(api.reader_key) as client:
        fetched = data_of(client.get(f"/nodes/{node['id']}"), 200)

    assert fetched == node


def test_another_orgs_node_is_not_found(api: Api) -> None:
    node = linked_node(api)

    with api.client(api.other_org_key) as client:
        response = client.get(f"/nodes/{node['id']}")
        listed = data_of(client.get("/nodes"), 200)

    error_of(response, 404, "not_found")
    assert node["id"] not in {n["id"] for n in listed}


def test_an_unknown_node_id_is_not_found(api: Api) -> None:
    with api.client(api.admin_key) as client:
        error_of(client.get("/nodes/node_doesnotexist"), 404, "not_found")

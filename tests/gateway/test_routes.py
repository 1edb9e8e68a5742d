"""Every route of the REST table, against a real gateway and coordinator.

Nothing is faked: each deployment is a coordinator process with its own
SQLite database and a gateway process in front of it, driven over HTTP.
Three deployments serve the module:

- ``api``: most tests. Its failed-approval limit is raised, because the
  error tests below refuse dozens of approvals from one address on purpose;
  counts that must be exact (overview, paging) use orgs of their own.
- ``expiring``: ``--link-ttl 10``, only for the expiry test.
- ``guarded``: the default rate limits, only for the brute-force tests.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from routes_support import (
    DNS_LABEL,
    ERROR_CODES,
    Deployment,
    approve,
    assert_node_shape,
    data_of,
    deployment,
    error_of,
    everything,
    format_time,
    link_node,
    new_public_key,
    page_of,
    parallel,
    parse_time,
    split_list,
    start_link,
    walk,
    wg_quick_sections,
)
from support.prerequisites import require

ALPHABET = "23456789BCDFGHJKMNPQRSTVWXZ"
UNKNOWN_ID = "node_doesnotexist"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    keys = {
        "admin": {},
        "reader": {"user": "reader@acme.test", "scopes": "runmesh:read"},
        "writer": {"user": "writer@acme.test", "scopes": "runmesh:write"},
        "no_activity": {
            "user": "ops@acme.test",
            "scopes": "runmesh:read,runmesh:write",
        },
        "member": {"user": "m@acme.test", "role": "member"},
        "other": {"org": "other", "user": "x@other.test"},
        "census": {"org": "census", "user": "c@census.test"},
        "pager": {"org": "paging", "user": "p@paging.test"},
    }
    extra = ["--failed-approvals-per-minute", "100000"]
    with deployment(tmp_path_factory.mktemp("routes"), keys, extra) as deploy:
        yield deploy


@pytest.fixture(scope="module")
def target(api: Deployment) -> dict[str, Any]:
    """An admin-owned node that no test changes (the error tests aim at it)."""
    return link_node(api, deviceLabel="Target Box", os="linux")


# ---- link/start, link/poll, link/approve ----


def test_link_start_answers_201_with_code_url_expiry_and_interval(
    api: Deployment,
) -> None:
    with api.client() as client:
        response = client.post(
            "/devices/link/start", json={"publicKey": new_public_key()}
        )

    started = data_of(response, 201)
    assert set(started) == {"code", "url", "expiresAt", "interval"}
    assert len(started["code"]) == 6 and set(started["code"]) <= set(ALPHABET)
    assert started["code"] in started["url"]
    left = parse_time(started["expiresAt"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=9) < left <= dt.timedelta(minutes=10)
    assert isinstance(started["interval"], int) and started["interval"] >= 1


def test_link_start_with_a_bad_public_key_is_invalid_request(api: Deployment) -> None:
    with api.client() as client:
        response = client.post("/devices/link/start", json={"publicKey": "garbage"})

    error_of(response, 400, "invalid_request")


def test_a_poll_is_pending_then_approved_with_the_node_and_coordinator(
    api: Deployment,
) -> None:
    with api.client() as anonymous, api.client("admin") as admin:
        key, started = start_link(anonymous)
        pending = data_of(
            anonymous.post(
                "/devices/link/poll", json={"code": started["code"], "publicKey": key}
            )
        )
        node = data_of(approve(admin, started["code"].lower()))
        time.sleep(1)  # the deployment's poll interval
        approved = data_of(
            anonymous.post(
                "/devices/link/poll", json={"code": started["code"], "publicKey": key}
            )
        )

    assert pending["status"] == "pending"
    assert pending["node"] is None and pending["coordinator"] is None
    assert pending["expiresAt"] == started["expiresAt"]
    assert approved["status"] == "approved"
    assert approved["node"] == node
    assert approved["coordinator"]["target"]
    assert approved["coordinator"]["publicKey"]


def test_a_poll_for_an_unknown_code_is_not_found(api: Deployment) -> None:
    with api.client() as client:
        response = client.post(
            "/devices/link/poll",
            json={"code": "ZZZZZZ", "publicKey": new_public_key()},
        )

    error_of(response, 404, "not_found")


def test_approve_creates_a_node_with_every_field_of_the_contract(
    api: Deployment,
) -> None:
    fields = {
        "deviceLabel": "Build Box",
        "hostname": "build-box.local",
        "os": "linux",
        "appVersion": "1.4.2",
        "clientMetadata": {"arch": "arm64"},
    }
    with api.client() as anonymous, api.client("admin") as admin:
        key, started = start_link(anonymous, **fields)
        node = data_of(approve(admin, started["code"]))
        fetched = data_of(admin.get(f"/nodes/{node['id']}"))

    assert_node_shape(node)
    assert node["publicKey"] == key
    assert node["deviceLabel"] == "Build Box"
    assert node["hostname"] == "build-box.local"
    assert node["os"] == "linux" and node["appVersion"] == "1.4.2"
    assert node["status"] == "offline"
    assert node["endpoints"] == []
    assert node["lastSeenAt"] is None and node["revokedAt"] is None
    assert fetched == node


def test_approve_with_a_name_uses_it(api: Deployment) -> None:
    node = link_node(api, name="named-at-approval")

    assert node["name"] == "named-at-approval"


def test_approve_with_a_taken_name_is_conflict_and_keeps_the_code(
    api: Deployment, target: dict[str, Any]
) -> None:
    with api.client() as anonymous, api.client("admin") as admin:
        _, started = start_link(anonymous)
        refused = approve(admin, started["code"], name=target["name"])
        node = data_of(approve(admin, started["code"]))

    error_of(refused, 409, "conflict")
    assert node["name"] != target["name"]


def test_approve_with_an_invalid_name_is_invalid_request(api: Deployment) -> None:
    with api.client() as anonymous, api.client("admin") as admin:
        _, started = start_link(anonymous)
        error_of(
            approve(admin, started["code"], name="Not A Label"), 400, "invalid_request"
        )


def test_a_second_approval_is_conflict(api: Deployment) -> None:
    with api.client() as anonymous, api.client("admin") as admin:
        _, started = start_link(anonymous)
        data_of(approve(admin, started["code"]))
        error_of(approve(admin, started["code"]), 409, "conflict")


def test_approving_an_unknown_code_is_not_found(api: Deployment) -> None:
    with api.client("admin") as admin:
        error_of(approve(admin, "ZZZZZZ"), 404, "not_found")


# ---- who may call what ----

AUTHED_ROUTES = [
    ("POST", "/devices/link/approve", {"code": "BCDFGH"}),
    ("GET", "/overview", None),
    ("GET", "/nodes", None),
    ("GET", "/nodes/{id}", None),
    ("GET", "/nodes/{id}/config", None),
    ("PATCH", "/nodes/{id}", {"name": "never-applied"}),
    ("DELETE", "/nodes/{id}", None),
    ("POST", "/nodes/{id}/revoke", None),
    ("GET", "/audit", None),
    ("GET", "/devices/{id}/activity", None),
]
WRITE_ROUTES = [r for r in AUTHED_ROUTES if r[0] != "GET"]
READ_ROUTES = [r for r in AUTHED_ROUTES if r[0] == "GET"]
ID_ROUTES = [r for r in AUTHED_ROUTES if "{id}" in r[1]]


def call(
    api: Deployment,
    key: str | None,
    route: tuple[str, str, Any],
    node_id: str,
    headers: dict[str, str] | None = None,
) -> Any:
    method, path, body = route
    with api.client(key) as client:
        return client.request(
            method, path.format(id=node_id), json=body, headers=headers or {}
        )


def route_id(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


def assert_untouched(api: Deployment, node: dict[str, Any]) -> None:
    with api.client("admin") as client:
        assert data_of(client.get(f"/nodes/{node['id']}")) == node


@pytest.mark.parametrize("route", AUTHED_ROUTES, ids=route_id)
def test_without_a_key_every_authed_route_is_unauthorized(
    api: Deployment, target: dict[str, Any], route: tuple[str, str, Any]
) -> None:
    error_of(call(api, None, route, target["id"]), 401, "unauthorized")
    bogus = {"Authorization": "Bearer rt_live_not-a-key"}
    error_of(call(api, None, route, target["id"], bogus), 401, "unauthorized")
    assert_untouched(api, target)


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_a_read_only_key_is_forbidden_on_write_routes(
    api: Deployment, target: dict[str, Any], route: tuple[str, str, Any]
) -> None:
    error_of(call(api, "reader", route, target["id"]), 403, "forbidden")
    assert_untouched(api, target)


@pytest.mark.parametrize("route", READ_ROUTES, ids=route_id)
def test_a_write_only_key_is_forbidden_on_read_routes(
    api: Deployment, target: dict[str, Any], route: tuple[str, str, Any]
) -> None:
    error_of(call(api, "writer", route, target["id"]), 403, "forbidden")


def test_activity_needs_activity_read_even_with_both_runmesh_scopes(
    api: Deployment, target: dict[str, Any]
) -> None:
    path = f"/devices/{target['id']}/activity"
    with api.client("no_activity") as lacking, api.client("admin") as admin:
        error_of(lacking.get(path), 403, "forbidden")
        page_of(admin.get(path))


@pytest.mark.parametrize("route", ID_ROUTES, ids=route_id)
def test_another_orgs_node_is_not_found_on_every_id_route(
    api: Deployment, target: dict[str, Any], route: tuple[str, str, Any]
) -> None:
    error_of(call(api, "other", route, target["id"]), 404, "not_found")
    assert_untouched(api, target)


@pytest.mark.parametrize("route", ID_ROUTES, ids=route_id)
def test_an_unknown_id_is_not_found_on_every_id_route(
    api: Deployment, route: tuple[str, str, Any]
) -> None:
    error_of(call(api, "admin", route, UNKNOWN_ID), 404, "not_found")


def test_another_orgs_list_does_not_show_the_node(
    api: Deployment, target: dict[str, Any]
) -> None:
    with api.client("other") as client:
        listed = everything(client, "/nodes", {"all": "true"})

    assert target["id"] not in {n["id"] for n in listed}


def test_a_bearer_key_works_like_x_api_key(api: Deployment) -> None:
    with api.client() as client:
        response = client.get(
            "/overview", headers={"Authorization": f"Bearer {api.keys['reader']}"}
        )

    data_of(response)


# ---- malformed input ----


def tampered(cursor: str) -> str:
    # Not the last character: its low bits may be padding that decodes alike.
    i = len(cursor) // 2
    return cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1 :]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/nodes", {"limit": "0"}),
        ("/nodes", {"limit": "501"}),
        ("/nodes", {"limit": "abc"}),
        ("/nodes", {"cursor": "!!not-a-cursor!!"}),
        ("/nodes", {"owner": "someone"}),
        ("/nodes", {"ip": "garbage"}),
        # Regression: a zone-scoped address matched nothing, with 200.
        ("/nodes", {"ip": "::1%eth0"}),
        ("/nodes", {"ip": "fd7a:115c:a1e0::7%1"}),
        ("/nodes", {"all": "banana"}),
        ("/audit", {"limit": "0"}),
        ("/audit", {"since": "garbage"}),
        ("/audit", {"until": "yesterday"}),
        ("/audit", {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}),
        ("/devices/{id}/activity", {"since": "garbage"}),
        ("/devices/{id}/activity", {"limit": "501"}),
        ("/nodes/{id}/config", {"format": "xml"}),
    ],
    ids=lambda value: str(value),
)
def test_a_malformed_query_is_invalid_request(
    api: Deployment, target: dict[str, Any], path: str, params: dict[str, str]
) -> None:
    with api.client("admin") as client:
        response = client.get(path.format(id=target["id"]), params=params)

    error_of(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/nodes", "/audit"])
def test_a_tampered_cursor_is_invalid_request(
    api: Deployment, target: dict[str, Any], path: str
) -> None:
    link_node(api)  # at least two nodes, so a one-item page has a cursor
    with api.client("admin") as client:
        _, meta = page_of(client.get(path, params={"limit": 1}))
        assert meta["hasMore"] and meta["nextCursor"]
        page_of(client.get(path, params={"limit": 1, "cursor": meta["nextCursor"]}))
        response = client.get(
            path, params={"limit": 1, "cursor": tampered(meta["nextCursor"])}
        )

    error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("source", "used_on"), [("/audit", "/nodes"), ("/nodes", "/audit")]
)
def test_a_cursor_from_another_list_is_invalid_request(
    api: Deployment, target: dict[str, Any], source: str, used_on: str
) -> None:
    link_node(api)  # at least two nodes, so a one-item page has a cursor
    with api.client("admin") as client:
        _, meta = page_of(client.get(source, params={"limit": 1}))
        assert meta["nextCursor"]
        response = client.get(used_on, params={"cursor": meta["nextCursor"]})

    error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [{}, {"name": 123}, {"name": None}, {"name": ["a"]}, [], "name=x"],
    ids=["missing name", "number", "null", "list", "array body", "not JSON"],
)
def test_a_malformed_rename_body_is_invalid_request(
    api: Deployment, target: dict[str, Any], body: Any
) -> None:
    with api.client("admin") as client:
        if isinstance(body, str):
            response = client.patch(
                f"/nodes/{target['id']}",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        else:
            response = client.patch(f"/nodes/{target['id']}", json=body)

    error_of(response, 400, "invalid_request")
    assert_untouched(api, target)


# ---- GET /nodes, /nodes/{id} ----


def test_node_list_filters_by_name_prefix_and_ip(api: Deployment) -> None:
    node = link_node(api, name="filter-probe-one")
    link_node(api, name="filter-probe-two")

    with api.client("reader") as client:
        by_name = everything(client, "/nodes", {"name": "filter-probe-"})
        exact = everything(client, "/nodes", {"name": "filter-probe-one"})
        by_v4 = everything(client, "/nodes", {"ip": node["ipv4"]})
        by_v6 = everything(client, "/nodes", {"ip": node["ipv6"]})
        # Regression: an IPv4-mapped spelling matched nothing.
        by_mapped = everything(client, "/nodes", {"ip": "::ffff:" + node["ipv4"]})
        nobody = everything(client, "/nodes", {"ip": "100.127.255.254"})

    assert {n["name"] for n in by_name} == {"filter-probe-one", "filter-probe-two"}
    assert [n["id"] for n in exact] == [node["id"]]
    assert by_v4 == [node] and by_v6 == [node] and by_mapped == [node]
    assert nobody == []
    for listed in by_name:
        assert_node_shape(listed)


def test_every_listed_node_has_the_contract_shape_and_unique_addresses(
    api: Deployment, target: dict[str, Any]
) -> None:
    with api.client("reader") as client:
        listed = everything(client, "/nodes", {"all": "true"})

    for node in listed:
        assert_node_shape(node)
    assert len({n["ipv4"] for n in listed}) == len(listed)
    assert len({n["ipv6"] for n in listed}) == len(listed)
    active = [n["name"] for n in listed if n["status"] != "revoked"]
    assert len(set(active)) == len(active)


# ---- roles ----


def test_a_member_sees_every_node_and_manages_only_its_own(
    api: Deployment, target: dict[str, Any]
) -> None:
    own = link_node(api, approver="member", deviceLabel="Member Laptop")

    with api.client("member") as member, api.client("admin") as admin:
        seen = {n["id"] for n in everything(member, "/nodes")}
        mine = everything(member, "/nodes", {"owner": "me"})
        admins = everything(admin, "/nodes", {"owner": "me"})
        rename_other = member.patch(f"/nodes/{target['id']}", json={"name": "stolen"})
        delete_other = member.delete(f"/nodes/{target['id']}")
        revoke_other = member.post(f"/nodes/{target['id']}/revoke")
        renamed = data_of(
            member.patch(f"/nodes/{own['id']}", json={"name": "members-own"})
        )
        revoked = data_of(member.post(f"/nodes/{own['id']}/revoke"))

    assert target["id"] in seen and own["id"] in seen
    assert own["ownerUserId"] != target["ownerUserId"]
    assert [n["id"] for n in mine] == [own["id"]]
    assert own["id"] not in {n["id"] for n in admins}
    assert all(n["ownerUserId"] == target["ownerUserId"] for n in admins)
    for refused in (rename_other, delete_other, revoke_other):
        error_of(refused, 403, "forbidden")
    assert_untouched(api, target)
    assert renamed["name"] == "members-own"
    assert revoked["status"] == "revoked"


# ---- PATCH /nodes/{id} ----


def test_rename_answers_the_renamed_node_and_audits_it(api: Deployment) -> None:
    node = link_node(api)

    with api.client("admin") as client:
        renamed = data_of(
            client.patch(f"/nodes/{node['id']}", json={"name": "renamed-box"})
        )
        fetched = data_of(client.get(f"/nodes/{node['id']}"))
        events = everything(client, "/audit", {"action": "node.renamed"})

    assert_node_shape(renamed)
    assert renamed == {**node, "name": "renamed-box"}
    assert fetched == renamed
    mine = [e for e in events if e["targetId"] == node["id"]]
    assert len(mine) == 1
    assert mine[0]["attributes"] == {"from": node["name"], "to": "renamed-box"}


def test_names_at_the_edges_of_a_dns_label_are_accepted(api: Deployment) -> None:
    node = link_node(api)

    with api.client("admin") as client:
        for name in ("b" * 63, "9", "edge-0-case"):
            renamed = data_of(client.patch(f"/nodes/{node['id']}", json={"name": name}))
            assert renamed["name"] == name


def test_renaming_to_a_taken_name_is_conflict(
    api: Deployment, target: dict[str, Any]
) -> None:
    node = link_node(api)

    with api.client("admin") as client:
        response = client.patch(f"/nodes/{node['id']}", json={"name": target["name"]})

    error_of(response, 409, "conflict")
    assert_untouched(api, node)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 64,
        "has space",
        "-leading",
        "trailing-",
        "ümlaut",
        "a;rm -rf /",
        "$(id)",
        "a/b",
        "UPPER",
        "line\nbreak",
        "dot.ted",
    ],
    ids=repr,
)
def test_a_hostile_name_is_refused_and_changes_nothing(
    api: Deployment, target: dict[str, Any], name: str
) -> None:
    with api.client("admin") as client:
        response = client.patch(f"/nodes/{target['id']}", json={"name": name})
        events = everything(client, "/audit", {"action": "node.renamed"})

    error_of(response, 400, "invalid_request")
    assert_untouched(api, target)
    assert target["id"] not in {e["targetId"] for e in events}


def test_labels_of_any_script_become_unique_dns_names_and_leave_peers_alone(
    api: Deployment,
) -> None:
    peer = link_node(api, deviceLabel="Existing Peer")
    with api.client("admin") as client:
        before = data_of(client.get(f"/nodes/{peer['id']}/config"))

    new = [
        link_node(api, deviceLabel=label)
        for label in ("我的电脑", "我的电脑", "Greg's MacBook Pro (2)")
    ]

    with api.client("admin") as client:
        after = data_of(client.get(f"/nodes/{peer['id']}/config"))
        active = everything(client, "/nodes")
    for node in new:
        assert DNS_LABEL.match(node["name"]), node["name"]
    names = [n["name"] for n in active]
    assert len(set(names)) == len(names)
    assert new[0]["name"] != new[1]["name"]
    assert new[0]["deviceLabel"] == "我的电脑"
    peers_after = {p["publicKey"]: p for p in after["peers"]}
    for old in before["peers"]:
        assert peers_after[old["publicKey"]]["allowedIps"] == old["allowedIps"]
    for node in new:
        added = peers_after[node["publicKey"]]
        assert added["nodeId"] == node["id"] and added["name"] == node["name"]
        assert added["allowedIps"] == [f"{node['ipv4']}/32", f"{node['ipv6']}/128"]
    assert after["addresses"] == before["addresses"]


# ---- DELETE /nodes/{id}, POST /nodes/{id}/revoke ----


def test_both_revoke_forms_are_one_idempotent_operation(api: Deployment) -> None:
    node = link_node(api)
    path = f"/nodes/{node['id']}"

    with api.client("admin") as client:
        first = data_of(client.delete(path))
        again = [
            data_of(client.post(f"{path}/revoke")),
            data_of(client.delete(path)),
            data_of(client.post(f"{path}/revoke", json={})),
        ]
        fetched = data_of(client.get(path))
        active = everything(client, "/nodes")
        listed = everything(client, "/nodes", {"all": "true"})
        audit = everything(client, "/audit", {"action": "node.revoked"})
        activity = everything(client, f"/devices/{node['id']}/activity")

    assert_node_shape(first)
    assert first["status"] == "revoked" and first["revokedAt"]
    assert all(answer == first for answer in again)
    assert fetched == first
    assert node["id"] not in {n["id"] for n in active}
    assert first in listed
    revoked = [e for e in audit if e["targetId"] == node["id"]]
    assert len(revoked) == 1, revoked
    assert revoked[0]["actorType"] == "user"
    assert revoked[0]["actorId"] == node["ownerUserId"]
    assert revoked[0]["targetType"] == "node"
    events = [a["eventType"] for a in activity]
    assert events.count("runmesh.node.revoked") == 1
    entry = activity[events.index("runmesh.node.revoked")]
    assert entry["resourceType"] == "runmesh_device"
    assert entry["resourceId"] == node["id"]


def test_the_post_form_revokes_too(api: Deployment) -> None:
    node = link_node(api)

    with api.client("admin") as client:
        revoked = data_of(client.post(f"/nodes/{node['id']}/revoke"))
        again = data_of(client.delete(f"/nodes/{node['id']}"))

    assert revoked["status"] == "revoked"
    assert again["revokedAt"] == revoked["revokedAt"]


# ---- GET /nodes/{id}/config ----


def test_the_wg_quick_file_parses_and_lists_exactly_the_other_active_nodes(
    api: Deployment, tmp_path: Path
) -> None:
    require(shutil.which("wg-quick") is not None, "wireguard-tools (wg-quick)")
    node = link_node(api, deviceLabel="Config Owner")
    gone = link_node(api, deviceLabel="Config Revoked")
    with api.client("admin") as client:
        data_of(client.delete(f"/nodes/{gone['id']}"))
        by_query = client.get(f"/nodes/{node['id']}/config?format=wg-quick")
        by_accept = client.get(
            f"/nodes/{node['id']}/config", headers={"Accept": "text/plain"}
        )
        as_json = data_of(client.get(f"/nodes/{node['id']}/config"))
        active = everything(client, "/nodes")

    assert by_query.status_code == 200, by_query.text
    assert by_query.headers["content-type"].startswith("text/plain")
    assert by_query.headers["X-Request-Id"].startswith("req_")
    assert by_accept.status_code == 200 and by_accept.text == by_query.text
    path = tmp_path / "rmq0.conf"
    path.write_text(by_query.text)
    path.chmod(0o600)
    stripped = subprocess.run(
        ["wg-quick", "strip", str(path)], capture_output=True, text=True, timeout=30
    )
    assert stripped.returncode == 0, stripped.stderr

    sections = wg_quick_sections(by_query.text)
    interface = [body for name, body in sections if name == "Interface"]
    peers = [body for name, body in sections if name == "Peer"]
    others = {n["publicKey"] for n in active if n["id"] != node["id"]}
    assert len(interface) == 1 and interface[0]["PrivateKey"] == as_json["privateKey"]
    assert {p["PublicKey"] for p in peers} == others
    assert gone["publicKey"] not in {p["PublicKey"] for p in peers}
    assert len(peers) == len(others)

    assert as_json["nodeId"] == node["id"]
    assert split_list(interface[0]["Address"]) == as_json["addresses"]
    assert [a.split("/")[0] for a in as_json["addresses"]] == [
        node["ipv4"],
        node["ipv6"],
    ]
    assert int(interface[0]["ListenPort"]) == as_json["listenPort"]
    from_json = {
        p["publicKey"]: (p["allowedIps"], p["endpoint"], p["persistentKeepalive"])
        for p in as_json["peers"]
    }
    from_file = {
        p["PublicKey"]: (
            split_list(p["AllowedIPs"]),
            p.get("Endpoint"),
            int(p.get("PersistentKeepalive", 0)),
        )
        for p in peers
    }
    assert from_file == from_json
    by_key = {n["publicKey"]: n for n in active}
    for key, (allowed, _, _) in from_json.items():
        assert allowed == [f"{by_key[key]['ipv4']}/32", f"{by_key[key]['ipv6']}/128"]


def test_config_json_is_the_default_even_for_a_wildcard_accept(
    api: Deployment, target: dict[str, Any]
) -> None:
    with api.client("reader") as client:
        response = client.get(
            f"/nodes/{target['id']}/config", headers={"Accept": "*/*"}
        )

    config = data_of(response)
    assert set(config) == {"nodeId", "addresses", "listenPort", "privateKey", "peers"}
    assert target["publicKey"] not in {p["publicKey"] for p in config["peers"]}


# ---- GET /overview ----


def test_overview_counts_agree_with_the_nodes_of_the_org(api: Deployment) -> None:
    systems = ["macos", "macos", "macos", "linux", "linux", ""]
    nodes = parallel(
        lambda os: link_node(api, approver="census", os=os), systems, workers=6
    )
    linux = next(n for n in nodes if n["os"] == "linux")

    with api.client("census") as client:
        data_of(client.post(f"/nodes/{linux['id']}/revoke"))
        overview = data_of(client.get("/overview"))
        listed = everything(client, "/nodes", {"all": "true"})

    assert overview == {
        "total": 6,
        "online": 0,
        "offline": 5,
        "revoked": 1,
        "byOs": {"macos": 3, "linux": 1, "unknown": 1},
    }
    assert len(listed) == overview["total"]
    assert sum(n["status"] == "revoked" for n in listed) == overview["revoked"]


# ---- paging ----


def test_paging_visits_every_node_once_in_a_stable_order(api: Deployment) -> None:
    nodes = parallel(
        lambda _: link_node(api, approver="pager", deviceLabel="Fleet Box"),
        range(120),
    )

    with api.client("pager") as client:
        walks = [walk(client, "/nodes", {"limit": 7}) for _ in range(2)]
        whole, meta = page_of(client.get("/nodes", params={"limit": 500}))
        default, default_meta = page_of(client.get("/nodes"))

    pages = walks[0]
    order = [n["id"] for items, _ in pages for n in items]
    assert sorted(order) == sorted(n["id"] for n in nodes)
    assert len(set(order)) == 120
    assert [len(items) for items, _ in pages] == [7] * 17 + [1]
    for _, page_meta in pages[:-1]:
        assert page_meta["hasMore"] is True and page_meta["nextCursor"]
    assert pages[-1][1]["hasMore"] is False and pages[-1][1]["nextCursor"] is None
    assert [n["id"] for items, _ in walks[1] for n in items] == order
    assert [n["id"] for n in whole] == order and meta["hasMore"] is False
    assert [n["id"] for n in default] == order[:50] and default_meta["hasMore"]
    # Approved in parallel, with one label: still one name each.
    assert len({n["name"] for n in nodes}) == 120


# ---- GET /audit ----


def test_every_change_is_audited_with_its_actor_and_filters_work(
    api: Deployment,
) -> None:
    def now_after_pause() -> dt.datetime:
        time.sleep(0.05)
        moment = dt.datetime.now(dt.UTC)
        time.sleep(0.05)
        return moment

    with api.client() as anonymous:
        key, started = start_link(anonymous)
    with api.client("admin") as client:
        node = data_of(approve(client, started["code"]))
        after_approval = now_after_pause()
        data_of(client.patch(f"/nodes/{node['id']}", json={"name": "audited-box"}))
        after_rename = now_after_pause()
        data_of(client.delete(f"/nodes/{node['id']}"))

        def actions(**params: str) -> list[str]:
            events = everything(client, "/audit", params)
            return [e["action"] for e in events if e["targetId"] == node["id"]]

        newest_first = everything(client, "/audit")
        since = actions(since=format_time(after_approval))
        until = actions(until=format_time(after_rename))
        between = actions(
            since=format_time(after_approval), until=format_time(after_rename)
        )
        only_renames = everything(client, "/audit", {"action": "node.renamed"})
        keys_created = everything(client, "/audit", {"action": "apikey.created"})

    mine = [e for e in newest_first if e["targetId"] == node["id"]]
    assert [e["action"] for e in mine] == [
        "node.revoked",
        "node.renamed",
        "device.link.approved",
        "device.link.started",
    ]
    actors = {e["action"]: (e["actorType"], e["actorId"]) for e in mine}
    assert actors["device.link.started"] == ("node", key)
    for action in ("device.link.approved", "node.renamed", "node.revoked"):
        assert actors[action] == ("user", node["ownerUserId"])
    for event in newest_first:
        assert set(event) == {
            "id",
            "orgId",
            "actorType",
            "actorId",
            "action",
            "targetType",
            "targetId",
            "attributes",
            "createdAt",
        }
        assert event["orgId"] == node["orgId"]
        assert event["actorType"] in {"user", "apiKey", "node", "system"}
    times = [parse_time(e["createdAt"]) for e in newest_first]
    assert times == sorted(times, reverse=True)

    assert since == ["node.revoked", "node.renamed"]
    assert until == ["node.renamed", "device.link.approved", "device.link.started"]
    assert between == ["node.renamed"]
    assert only_renames and {e["action"] for e in only_renames} == {"node.renamed"}
    # One per key made for this org by `keys create` (admin … member).
    assert len(keys_created) == 5
    for event in keys_created:
        assert event["actorType"] == "system" and event["targetType"] == "apiKey"


# ---- GET /devices/{id}/activity ----


def test_activity_lists_a_nodes_history_newest_first_with_filters(
    api: Deployment,
) -> None:
    node = link_node(api)
    with api.client("admin") as client:
        data_of(client.patch(f"/nodes/{node['id']}", json={"name": "active-box"}))
        time.sleep(0.05)
        between = dt.datetime.now(dt.UTC)
        time.sleep(0.05)
        data_of(client.delete(f"/nodes/{node['id']}"))
        path = f"/devices/{node['id']}/activity"
        history = everything(client, path)
        since = everything(client, path, {"since": format_time(between)})
        until = everything(client, path, {"until": format_time(between)})

    assert [a["eventType"] for a in history] == [
        "runmesh.node.revoked",
        "runmesh.node.renamed",
    ]
    for entry in history:
        assert set(entry) == {
            "id",
            "resourceType",
            "resourceId",
            "eventType",
            "severity",
            "status",
            "title",
            "summary",
            "attributes",
            "createdAt",
        }
        assert entry["resourceType"] == "runmesh_device"
        assert entry["resourceId"] == node["id"]
        parse_time(entry["createdAt"])
    assert [a["eventType"] for a in since] == ["runmesh.node.revoked"]
    assert [a["eventType"] for a in until] == ["runmesh.node.renamed"]


# ---- unknown routes and methods ----


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/v1/runmesh/nope", 404),
        ("GET", "/v1/runmesh/nodes/", 404),
        ("GET", "/nope", 404),
        ("PUT", "/v1/runmesh/nodes", 405),
        ("GET", "/v1/runmesh/devices/link/start", 405),
        ("POST", "/v1/runmesh/overview", 405),
        ("PUT", "/v1/runmesh/nodes/node_x", 405),
    ],
)
def test_unknown_routes_and_wrong_methods_answer_in_the_envelope(
    api: Deployment, method: str, url: str, status: int
) -> None:
    with api.client("admin") as client:
        response = client.request(method, f"http://{api.gateway.target}{url}")

    code = response.json()["error"]["code"]
    assert code in ERROR_CODES
    error_of(response, status, code)
    if status == 405:
        assert response.headers["Allow"]


# ---- expiry (its own coordinator, --link-ttl 10) ----


@dataclass(frozen=True)
class PendingLink:
    deploy: Deployment
    public_key: str
    started: dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def expiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PendingLink]:
    """A code that expires 10 s after the module starts.

    Autouse, so the code is started before the first test and its time runs
    out while the others run; the expiry test, last but two, waits only for
    what is left of it.
    """
    keys = {"admin": {}}
    extra = ["--link-ttl", "10"]
    with deployment(tmp_path_factory.mktemp("expiring"), keys, extra) as deploy:
        with deploy.client() as anonymous:
            public_key, started = start_link(anonymous)
        yield PendingLink(deploy, public_key, started)


def test_approving_an_expired_code_is_expired(expiring: PendingLink) -> None:
    deploy, code = expiring.deploy, expiring.started["code"]
    wait = parse_time(expiring.started["expiresAt"]) - dt.datetime.now(dt.UTC)
    time.sleep(max(0.0, wait.total_seconds()) + 0.5)

    with deploy.client() as anonymous, deploy.client("admin") as admin:
        refused = approve(admin, code)
        state = data_of(
            anonymous.post(
                "/devices/link/poll",
                json={"code": code, "publicKey": expiring.public_key},
            )
        )
        events = data_of(admin.get("/audit", params={"action": "device.link.expired"}))

    error_of(refused, 410, "expired")
    assert state["status"] == "expired" and state["node"] is None
    assert len(events) == 1 and events[0]["actorType"] == "user"


# ---- brute force (its own coordinator, default rate limits) ----


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    keys = {
        "attacker": {"user": "mallory@acme.test"},
        "owner": {"user": "owner@acme.test"},
    }
    with deployment(tmp_path_factory.mktemp("guarded"), keys) as deploy:
        yield deploy


def wrong_codes(count: int, right: str) -> list[str]:
    codes = [
        f"{ALPHABET[i // 27 % 27]}{ALPHABET[i % 27]}BCDF" for i in range(count + 1)
    ]
    return [c for c in codes if c != right][:count]


def test_guessing_approval_codes_is_rate_limited_and_the_owner_still_approves(
    guarded: Deployment,
) -> None:
    with guarded.client() as anonymous:
        _, started = start_link(anonymous)

    began = time.monotonic()
    with guarded.client("attacker") as attacker:
        answers = [approve(attacker, code) for code in wrong_codes(50, started["code"])]
        with_right_code = approve(attacker, started["code"])
    elapsed = time.monotonic() - began
    with guarded.client("owner") as owner:
        node = data_of(approve(owner, started["code"]))

    assert elapsed < 30
    statuses = [a.status_code for a in answers]
    first_refusal = statuses.index(429)
    assert 5 <= first_refusal <= 12, statuses
    assert set(statuses[:first_refusal]) == {404}
    assert set(statuses[first_refusal:]) == {429}, statuses
    for refused in [*answers[first_refusal:], with_right_code]:
        error_of(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1
    assert node["status"] == "offline"


def test_polling_wrong_codes_from_one_address_is_rate_limited(
    guarded: Deployment,
) -> None:
    with guarded.client() as anonymous:
        answers = []
        for code in wrong_codes(60, ""):
            answer = anonymous.post(
                "/devices/link/poll",
                json={"code": code, "publicKey": new_public_key()},
            )
            answers.append(answer)
            if answer.status_code == 429:
                break

    statuses = [a.status_code for a in answers]
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {404}
    error_of(answers[-1], 429, "rate_limited")
    assert int(answers[-1].headers["Retry-After"]) >= 1

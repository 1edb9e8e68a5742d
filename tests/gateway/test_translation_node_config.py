"""A node's WireGuard configuration: JSON by default, a wg-quick file on request."""

from __future__ import annotations

import grpc
import httpx
import pytest
from gateway_fakes import KEY, Failure, FakeCoordinator, assert_error

from runmesh.v1 import admin_pb2

pytestmark = pytest.mark.anyio

CONFIG = "/v1/runmesh/nodes/node_7h3k2m9x/config"
PLACEHOLDER = "<private key of this device: only it holds the key>"
WG_QUICK = f"[Interface]\nPrivateKey = {PLACEHOLDER}\nAddress = 100.64.0.7/16\n"


def sample_config() -> admin_pb2.NodeConfig:
    return admin_pb2.NodeConfig(
        node_id="node_7h3k2m9x",
        addresses=["100.64.0.7/16", "fd7a:115c:a1e0::7/64"],
        listen_port=51820,
        private_key_placeholder=PLACEHOLDER,
        peers=[
            admin_pb2.ConfigPeer(
                node_id="node_b",
                name="build-box",
                public_key=KEY,
                allowed_ips=["100.64.0.9/32"],
                endpoint="198.51.100.4:51820",
                persistent_keepalive=25,
            ),
            admin_pb2.ConfigPeer(
                node_id="node_c", name="phone", public_key=KEY, allowed_ips=[]
            ),
        ],
        wg_quick=WG_QUICK,
    )


async def test_config_is_json_by_default(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNodeConfig"] = sample_config()

    response = await client.get(CONFIG)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["data"] == {
        "nodeId": "node_7h3k2m9x",
        "addresses": ["100.64.0.7/16", "fd7a:115c:a1e0::7/64"],
        "listenPort": 51820,
        "privateKey": PLACEHOLDER,
        "peers": [
            {
                "nodeId": "node_b",
                "name": "build-box",
                "publicKey": KEY,
                "allowedIps": ["100.64.0.9/32"],
                "endpoint": "198.51.100.4:51820",
                "persistentKeepalive": 25,
            },
            {
                "nodeId": "node_c",
                "name": "phone",
                "publicKey": KEY,
                "allowedIps": [],
                # No endpoint reported: null, not "".
                "endpoint": None,
                "persistentKeepalive": 0,
            },
        ],
    }
    assert fake.last.method == "GetNodeConfig"
    assert fake.last.request.id == "node_7h3k2m9x"


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"format": "wg-quick"}, {}),
        ({}, {"accept": "text/plain"}),
        ({}, {"accept": "application/json;q=0.5, text/plain"}),
        ({"format": "wg-quick"}, {"accept": "application/json"}),
    ],
    ids=["format", "accept", "accept preferring text", "format over accept"],
)
async def test_wg_quick_is_the_coordinators_file_as_text(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    fake.replies["GetNodeConfig"] = sample_config()

    response = await client.get(CONFIG, params=params, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == WG_QUICK
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["vary"] == "Accept"


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"format": "json"}, {"accept": "text/plain"}),
        ({}, {"accept": "*/*"}),
        ({}, {"accept": "text/plain, application/json"}),
        ({}, {"accept": "text/plain;q=0"}),
        ({}, {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}),
    ],
    ids=["format=json wins", "any", "a tie", "text refused", "a browser"],
)
async def test_json_unless_text_is_asked_for_and_preferred(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    fake.replies["GetNodeConfig"] = sample_config()

    response = await client.get(CONFIG, params=params, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["data"]["nodeId"] == "node_7h3k2m9x"
    assert response.headers["vary"] == "Accept"


async def test_an_unknown_format_is_invalid_request(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    response = await client.get(CONFIG, params={"format": "yaml"})

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == "format: input should be 'json' or 'wg-quick'"
    assert fake.calls == []


async def test_errors_stay_json_when_the_file_was_asked_for(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["GetNodeConfig"] = Failure(
        grpc.StatusCode.NOT_FOUND, "no such node", reason="not_found"
    )

    response = await client.get(CONFIG, params={"format": "wg-quick"})

    error = assert_error(response, 404, "not_found")
    assert error["message"] == "no such node"

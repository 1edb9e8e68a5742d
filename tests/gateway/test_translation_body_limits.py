"""Bodies refused for what they hold: control characters, hostile metadata.

Each would otherwise reach the coordinator and fail there (a Struct protobuf
cannot decode, a number a double cannot hold) as a 500, or be stored and
shown to approvers.
"""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from gateway_fakes import KEY, FakeCoordinator, assert_error, sample_node
from google.protobuf import json_format

from gateway.errors import api_error_from_validation
from runmesh.v1 import mesh_pb2

pytestmark = pytest.mark.anyio

START = "/v1/runmesh/devices/link/start"

DEPTH_MESSAGE = "clientMetadata: nested deeper than 8 levels"
NUMBER_MESSAGE = "clientMetadata: numbers must be finite and within ±1e15"


def nested_objects(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def nested_lists(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


async def post_metadata(client: httpx.AsyncClient, metadata: str) -> httpx.Response:
    # Raw JSON text: NaN, 1e400 and 400-digit integers survive as sent.
    body = f'{{"publicKey": "{KEY}", "clientMetadata": {metadata}}}'
    headers = {"content-type": "application/json"}
    return await client.post(START, content=body, headers=headers)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (nested_objects(9), DEPTH_MESSAGE),
        (nested_objects(34), DEPTH_MESSAGE),
        (nested_objects(500), DEPTH_MESSAGE),
        ('{"a": ' + nested_lists(8) + "}", DEPTH_MESSAGE),
        ('{"a": ' + nested_lists(50) + "}", DEPTH_MESSAGE),
        ('{"n": NaN}', NUMBER_MESSAGE),
        ('{"n": Infinity}', NUMBER_MESSAGE),
        ('{"n": [-Infinity]}', NUMBER_MESSAGE),
        ('{"n": 1e400}', NUMBER_MESSAGE),
        ('{"n": ' + "9" * 400 + "}", NUMBER_MESSAGE),
        ('{"n": -1e16}', NUMBER_MESSAGE),
        (
            '{"' + "k" * 65 + '": 1}',
            "clientMetadata: keys must be at most 64 characters",
        ),
        (
            '{"a": {"bad\\u0000key": 1}}',
            "clientMetadata: keys must not contain control characters",
        ),
        ('{"a": "\\ud800"}', "clientMetadata: strings must be valid Unicode"),
        ('{"\\udfff": 1}', "clientMetadata: strings must be valid Unicode"),
    ],
    ids=[
        "objects-9",
        "objects-34",
        "objects-500",
        "lists-9",
        "lists-50",
        "nan",
        "infinity",
        "minus-infinity",
        "1e400",
        "400-digits",
        "beyond-1e15",
        "long-key",
        "control-in-key",
        "surrogate-value",
        "surrogate-key",
    ],
)
async def test_client_metadata_a_struct_cannot_carry_is_refused_in_one_short_sentence(
    client: httpx.AsyncClient, fake: FakeCoordinator, metadata: str, message: str
) -> None:
    response = await post_metadata(client, metadata)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"] == message
    assert fake.calls == []


async def test_the_deepest_and_largest_metadata_accepted_reaches_the_coordinator(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["StartLink"] = mesh_pb2.StartLinkResponse(code="KX7T9Q")
    value: object = [1e15, -1e15, True, None, "ok"]
    for _ in range(6):
        value = {"a": value}
    metadata = {"k" * 64: value}  # eight levels, the list the deepest

    response = await post_metadata(client, json.dumps(metadata))

    assert response.status_code == 201, response.text
    # The fake decoded the Struct as the coordinator does: nothing was lost.
    received = json_format.MessageToDict(fake.last.request.client_metadata)
    assert received == metadata


@pytest.mark.parametrize(
    ("method", "path", "field", "body"),
    [
        ("POST", START, "deviceLabel", {"publicKey": KEY, "deviceLabel": "Ada\x00"}),
        ("POST", START, "hostname", {"publicKey": KEY, "hostname": "mbp\r\nX: y"}),
        ("POST", START, "os", {"publicKey": KEY, "os": "\x1b[31mmacos"}),
        ("POST", START, "appVersion", {"publicKey": KEY, "appVersion": "1.4\x7f"}),
        ("POST", START, "publicKey", {"publicKey": KEY + "\x85"}),
        (
            "POST",
            "/v1/runmesh/devices/link/poll",
            "code",
            {"code": "KX7\x00T9Q", "publicKey": KEY},
        ),
        (
            "POST",
            "/v1/runmesh/devices/link/approve",
            "name",
            {"code": "KX7T9Q", "name": "ada\tlaptop"},
        ),
        ("POST", "/v1/runmesh/devices/link/approve", "code", {"code": "KX7T9Q\n"}),
        ("PATCH", "/v1/runmesh/nodes/node_x", "name", {"name": "ada\x00"}),
    ],
    ids=lambda value: value if isinstance(value, str) and "/" not in value else None,
)
async def test_a_text_field_with_control_characters_is_refused_naming_the_field(
    client: httpx.AsyncClient,
    fake: FakeCoordinator,
    method: str,
    path: str,
    field: str,
    body: dict[str, str],
) -> None:
    response = await client.request(method, path, json=body)

    error = assert_error(response, 400, "invalid_request")
    if field == "publicKey":
        # The key's own pattern (base64 of 32 bytes) refuses it first.
        assert error["message"].startswith("publicKey: ")
    else:
        assert error["message"] == f"{field}: must not contain control characters"
    assert fake.calls == []


async def test_a_lone_surrogate_in_a_text_field_is_refused_naming_the_field(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    body = f'{{"publicKey": "{KEY}", "deviceLabel": "Ada\\ud800"}}'

    response = await client.post(
        START, content=body, headers={"content-type": "application/json"}
    )

    error = assert_error(response, 400, "invalid_request")
    assert error["message"].startswith("deviceLabel: ")
    assert fake.calls == []


async def test_plain_text_with_unicode_still_goes_through(
    client: httpx.AsyncClient, fake: FakeCoordinator
) -> None:
    fake.replies["ApproveLink"] = sample_node()

    response = await client.post(
        "/v1/runmesh/devices/link/approve",
        json={"code": "KX7T9Q", "name": "adas-möbius 🚀"},
    )

    assert response.status_code == 200, response.text
    assert fake.last.request.name == "adas-möbius 🚀"


def test_a_very_deep_location_is_cut_short_in_the_message() -> None:
    location = ("body", "clientMetadata", *["a", "dict"] * 500)
    problem = {"type": "missing", "loc": location, "msg": "Field required"}

    error = api_error_from_validation(RequestValidationError([problem]))

    assert error.message.startswith("clientMetadata.a.dict.a.dict")
    assert error.message.endswith("…: field required")
    assert len(error.message) < 100

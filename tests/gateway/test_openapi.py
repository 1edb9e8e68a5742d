"""The OpenAPI document describes bodies, answers and error envelopes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_openapi_declares_the_error_envelope_and_no_422(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    approve = schema["paths"]["/v1/runmesh/devices/link/approve"]["post"]
    assert {"400", "401", "403", "404", "409", "410", "429", "500", "503"} <= set(
        approve["responses"]
    )
    assert approve["responses"]["410"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    for path in schema["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]
    start = schema["components"]["schemas"]["StartLinkBody"]
    assert start["required"] == ["publicKey"]
    assert "clientMetadata" in start["properties"]
    assert schema["paths"]["/v1/runmesh/devices/link/start"]["post"]["responses"]["201"]

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


ROUTES = {
    ("get", "/v1/runmesh/overview"): {"200", "401", "403"},
    ("get", "/v1/runmesh/nodes"): {"200", "400", "401", "403"},
    ("get", "/v1/runmesh/nodes/{id}"): {"200", "400", "401", "403", "404"},
    ("get", "/v1/runmesh/nodes/{id}/config"): {"200", "400", "401", "403", "404"},
    ("patch", "/v1/runmesh/nodes/{id}"): {"200", "400", "401", "403", "404", "409"},
    ("delete", "/v1/runmesh/nodes/{id}"): {"200", "400", "401", "403", "404"},
    ("post", "/v1/runmesh/nodes/{id}/revoke"): {"200", "400", "401", "403", "404"},
    ("get", "/v1/runmesh/audit"): {"200", "400", "401", "403"},
    ("get", "/v1/runmesh/devices/{id}/activity"): {"200", "400", "401", "403", "404"},
}


async def test_every_route_of_the_contract_is_documented_with_its_errors(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    for (method, path), statuses in ROUTES.items():
        responses = paths[path][method]["responses"]
        assert statuses | {"500", "503"} <= set(responses), (method, path)
        # 200 exactly, never FastAPI's guess of 201 for a POST.
        assert not {"201", "204"} & set(responses), (method, path)


async def test_config_documents_json_and_the_wg_quick_text(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    config = schema["paths"]["/v1/runmesh/nodes/{id}/config"]["get"]
    content = config["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/plain"}
    assert content["text/plain"]["schema"] == {"type": "string"}
    assert "[Interface]" in content["text/plain"]["example"]
    (format_param,) = [p for p in config["parameters"] if p["name"] == "format"]
    assert format_param["schema"]["anyOf"][0]["enum"] == ["json", "wg-quick"]
    peer = schema["components"]["schemas"]["ConfigPeer"]["properties"]
    assert {"type": "null"} in peer["endpoint"]["anyOf"]


async def test_query_parameters_are_declared_with_their_limits(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    def params(path: str) -> dict[str, dict[str, object]]:
        return {p["name"]: p["schema"] for p in paths[path]["get"]["parameters"]}

    nodes = params("/v1/runmesh/nodes")
    assert nodes["owner"]["anyOf"][0] == {"const": "me", "type": "string"}
    assert nodes["name"]["anyOf"][0] == {"type": "string", "maxLength": 63}
    assert nodes["ip"]["anyOf"][0] == {"type": "string", "maxLength": 64}
    audit = params("/v1/runmesh/audit")
    assert (audit["limit"]["minimum"], audit["limit"]["maximum"]) == (1, 500)
    assert audit["since"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert audit["action"]["anyOf"][0] == {"type": "string", "maxLength": 64}
    assert set(params("/v1/runmesh/devices/{id}/activity")) == {
        "id",
        "limit",
        "cursor",
        "since",
        "until",
    }


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_html_docs_are_served_but_left_out_of_the_schema(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    schema = (await client.get("/openapi.json")).json()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assert path not in schema["paths"]
    assert all(
        template.startswith("/v1/runmesh/") or template in PROBES
        for template in schema["paths"]
    )


PROBES = {"/healthz": "Liveness", "/readyz": "Readiness"}


async def test_the_probes_are_documented_under_operations(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    for path, body in PROBES.items():
        operation = schema["paths"][path]["get"]
        assert operation["tags"] == ["operations"]
        assert operation["responses"]["200"]["content"]["application/json"][
            "schema"
        ] == {"$ref": f"#/components/schemas/{body}"}
    readyz = schema["paths"]["/readyz"]["get"]["responses"]
    assert readyz["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_every_route_that_needs_a_key_says_so_in_the_schema() -> None:
    from gateway.app import create_app

    schema = create_app("127.0.0.1:1").openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearer"]["scheme"] == "bearer"
    open_routes = {
        "/v1/runmesh/devices/link/start",
        "/v1/runmesh/devices/link/poll",
        "/healthz",
        "/readyz",
    }
    for route, path in schema["paths"].items():
        for operation in path.values():
            if route in open_routes:
                assert "security" not in operation, route
            else:
                assert operation["security"] == [{"apiKey": []}, {"bearer": []}], route

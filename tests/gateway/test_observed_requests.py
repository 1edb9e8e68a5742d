"""What a real gateway process tells an operator about its requests: the
Prometheus metrics on --metrics-listen and one JSON log line per request.

Labels and lines name route templates, never a concrete path: node ids must
not become label values (one series per node) or log noise."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from gateway_processes import Gateway, start_gateway
from prometheus_client.parser import text_string_to_metric_families
from support.processes import create_key, free_port, start_coordinator

NODE_ID = "node_zq8w4t1x"
NODE_ROUTE = "/v1/runmesh/nodes/{id}"


@dataclass
class Observed:
    gateway: Gateway
    metrics_url: str
    key: str
    # request id → (method, path) of each request the module's fixture made
    requests: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("observed")
    coordinator = start_coordinator(workdir)
    metrics_port = free_port()
    gateway = start_gateway(
        workdir,
        coordinator.target,
        ["--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-format", "json"],
    )
    key = create_key(coordinator.db_url)
    try:
        requests = _make_requests(gateway, key)
        yield Observed(gateway, f"http://127.0.0.1:{metrics_port}", key, requests)
    finally:
        gateway.stop()
        coordinator.stop()


def _make_requests(gateway: Gateway, key: str) -> dict[str, tuple[str, str]]:
    sent = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", f"/v1/runmesh/nodes/{NODE_ID}"),
        ("GET", f"/v1/runmesh/nodes/{NODE_ID}/config"),
        ("PATCH", f"/v1/runmesh/nodes/{NODE_ID}"),
        ("GET", "/v1/runmesh/nodes?cursor=c2VjcmV0LWN1cnNvcg&limit=5"),
        ("GET", f"/no/such/route/{NODE_ID}"),
        ("DELETE", "/healthz"),
        ("BREW", f"/v1/runmesh/nodes/{NODE_ID}"),
    ]
    ids: dict[str, tuple[str, str]] = {}
    with gateway.client() as client:
        for method, path in sent:
            body = {"name": "ada"} if method == "PATCH" else None
            response = client.request(
                method, path, json=body, headers={"X-API-Key": key}
            )
            ids[response.headers["x-request-id"]] = (method, path)
    return ids


def _samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("runmesh_gateway_")
    ]


def test_requests_are_counted_by_route_template_method_and_status(
    observed: Observed,
) -> None:
    counted = {
        (labels["route"], labels["method"], labels["status"]): value
        for name, labels, value in _samples(observed.metrics_url)
        if name == "runmesh_gateway_requests_total"
    }

    assert counted[("/healthz", "GET", "200")] == 1
    assert counted[("/readyz", "GET", "200")] == 1
    assert counted[(NODE_ROUTE, "GET", "404")] == 1
    assert counted[(NODE_ROUTE + "/config", "GET", "404")] == 1
    assert counted[(NODE_ROUTE, "PATCH", "404")] == 1
    # The made-up cursor is refused: counted all the same, query left out.
    assert counted[("/v1/runmesh/nodes", "GET", "400")] == 1
    # An unknown path is one series whatever its path; a wrong method is
    # counted on the route that refused it.
    assert counted[("unmatched", "GET", "404")] == 1
    assert counted[("/healthz", "DELETE", "405")] == 1
    assert counted[(NODE_ROUTE, "other", "405")] == 1


def test_durations_are_a_histogram_by_route_template(observed: Observed) -> None:
    counts = {
        (labels["route"], labels["method"]): value
        for name, labels, value in _samples(observed.metrics_url)
        if name == "runmesh_gateway_request_duration_seconds_count"
    }

    assert counts[(NODE_ROUTE, "GET")] == 1
    assert counts[("unmatched", "GET")] == 1


def test_no_label_holds_a_node_id_or_a_query(observed: Observed) -> None:
    values = {
        value
        for _, labels, _ in _samples(observed.metrics_url)
        for value in labels.values()
    }

    assert not [value for value in values if NODE_ID in value or "?" in value]
    assert not [v for v in values if v.startswith("/") and "node_" in v]


def _access_lines(observed: Observed) -> list[dict[str, str]]:
    return [
        line
        for line in observed.gateway.json_log()
        if line.get("name") == "gateway.access"
    ]


def test_every_request_has_one_json_log_line_with_its_request_id(
    observed: Observed,
) -> None:
    lines = _access_lines(observed)

    assert sorted(line["request_id"] for line in lines) == sorted(observed.requests)
    by_id = {line["request_id"]: line for line in lines}
    node = next(
        rid
        for rid, (method, path) in observed.requests.items()
        if (method, path) == ("GET", f"/v1/runmesh/nodes/{NODE_ID}")
    )
    assert by_id[node]["level"] == "INFO"
    assert by_id[node]["method"] == "GET"
    assert by_id[node]["route"] == NODE_ROUTE
    assert by_id[node]["status"] == "404"
    assert float(by_id[node]["duration_ms"]) >= 0
    assert by_id[node]["message"].startswith("request method=GET")


def test_the_log_holds_no_key_no_concrete_path_and_no_query(
    observed: Observed,
) -> None:
    log = observed.gateway.service.log()

    assert observed.key not in log
    assert "c2VjcmV0LWN1cnNvcg" not in log
    assert f"/nodes/{NODE_ID}" not in log
    assert "/no/such/route" not in log

"""Helpers for ``test_routes.py``: real deployments, envelopes, links, shapes.

A ``Deployment`` is a coordinator process, a gateway process in front of it
and the API keys a test module needs. Keys are made with the operator's
``keys create`` command, in parallel because each one is a process start.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from nacl.public import PrivateKey
from support.processes import (
    Coordinator,
    Service,
    create_key,
    gateway_client,
    start_coordinator,
    start_gateway,
)

ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MESH_V4 = ipaddress.ip_network("100.64.0.0/10")
MESH_V6 = ipaddress.ip_network("fd00::/8")
ERROR_CODES = {
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "expired",
    "rate_limited",
    "resource_exhausted",
    "internal",
    "unavailable",
}
NODE_FIELDS = {
    "id",
    "orgId",
    "name",
    "deviceLabel",
    "hostname",
    "os",
    "appVersion",
    "publicKey",
    "ipv4",
    "ipv6",
    "status",
    "ownerUserId",
    "endpoints",
    "createdAt",
    "lastSeenAt",
    "revokedAt",
}

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Deployment:
    coordinator: Coordinator
    gateway: Service
    keys: Mapping[str, str]

    def client(self, key: str | None = None) -> httpx.Client:
        """A client sending the named key of ``keys`` (None: no key)."""
        return gateway_client(self.gateway, self.keys[key] if key else None)


@contextmanager
def deployment(
    workdir: Path, keys: Mapping[str, Mapping[str, str]], extra: Sequence[str] = ()
) -> Iterator[Deployment]:
    """Coordinator, gateway and ``keys`` (name → create_key arguments)."""
    coordinator = start_coordinator(workdir, extra=extra)
    try:
        gateway = start_gateway(workdir, coordinator.target)
        try:
            made = parallel(
                lambda spec: create_key(coordinator.db_url, **spec),
                list(keys.values()),
            )
            yield Deployment(coordinator, gateway, dict(zip(keys, made, strict=True)))
        finally:
            gateway.stop()
    finally:
        coordinator.stop()


def parallel(work: Callable[[T], R], items: Iterable[T], workers: int = 8) -> list[R]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, items))


# ---- envelopes ----


def data_of(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"data", "meta"}, body
    assert body["meta"]["requestId"].startswith("req_")
    assert response.headers["X-Request-Id"] == body["meta"]["requestId"]
    return body["data"]


def page_of(response: httpx.Response) -> tuple[list[Any], dict[str, Any]]:
    """The items and meta of a list answer."""
    data = data_of(response)
    meta: dict[str, Any] = response.json()["meta"]
    assert isinstance(data, list)
    assert isinstance(meta["hasMore"], bool)
    assert meta["nextCursor"] is None or isinstance(meta["nextCursor"], str)
    return data, meta


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, str] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    assert error["requestId"].startswith("req_")
    assert error["requestId"] == response.headers["X-Request-Id"]
    return error


def walk(
    client: httpx.Client, path: str, params: Mapping[str, Any] | None = None
) -> list[tuple[list[Any], dict[str, Any]]]:
    """Every page of a list, following nextCursor until hasMore is false."""
    pages = []
    query = dict(params or {})
    while True:
        items, meta = page_of(client.get(path, params=query))
        pages.append((items, meta))
        if not meta["hasMore"]:
            return pages
        assert len(pages) < 1000, "the list never ends"
        query["cursor"] = meta["nextCursor"]


def everything(
    client: httpx.Client, path: str, params: Mapping[str, Any] | None = None
) -> list[Any]:
    return [
        item
        for items, _ in walk(client, path, {"limit": 500, **(params or {})})
        for item in items
    ]


# ---- shapes ----


def parse_time(text: str) -> dt.datetime:
    assert ISO_UTC_MS.match(text), text
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_time(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def assert_node_shape(node: Mapping[str, Any]) -> None:
    assert set(node) == NODE_FIELDS, set(node) ^ NODE_FIELDS
    assert node["id"].startswith("node_") and len(node["id"]) > len("node_")
    assert isinstance(node["orgId"], str) and node["orgId"]
    assert DNS_LABEL.match(node["name"]), node["name"]
    for text in ("deviceLabel", "hostname", "os", "appVersion"):
        assert isinstance(node[text], str), text
    assert len(base64.b64decode(node["publicKey"], validate=True)) == 32
    assert ipaddress.ip_address(node["ipv4"]) in MESH_V4, node["ipv4"]
    assert ipaddress.ip_address(node["ipv6"]) in MESH_V6, node["ipv6"]
    assert node["status"] in {"online", "offline", "revoked"}
    assert isinstance(node["ownerUserId"], str) and node["ownerUserId"]
    assert isinstance(node["endpoints"], list)
    assert all(isinstance(e, str) for e in node["endpoints"])
    parse_time(node["createdAt"])
    for moment in ("lastSeenAt", "revokedAt"):
        assert node[moment] is None or parse_time(node[moment])
    assert (node["status"] == "revoked") == (node["revokedAt"] is not None)


# ---- the link flow ----


def new_public_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def start_link(
    client: httpx.Client, public_key: str | None = None, **fields: Any
) -> tuple[str, dict[str, Any]]:
    """Start a link without a key; the device's public key and the answer."""
    key = public_key or new_public_key()
    body = {"publicKey": key, "deviceLabel": "Ada's MacBook", "os": "macos", **fields}
    started: dict[str, Any] = data_of(
        client.post("/devices/link/start", json=body), 201
    )
    return key, started


def approve(client: httpx.Client, code: str, name: str | None = None) -> httpx.Response:
    body = {"code": code} if name is None else {"code": code, "name": name}
    return client.post("/devices/link/approve", json=body)


def link_node(
    deploy: Deployment, approver: str = "admin", name: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A node approved by the key named ``approver``."""
    with deploy.client() as anonymous:
        _, started = start_link(anonymous, **fields)
    with deploy.client(approver) as client:
        node: dict[str, Any] = data_of(approve(client, started["code"], name))
    return node


# ---- wg-quick files ----


def wg_quick_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """The ``[Section]``s of a wg-quick file with their ``Key = value`` lines."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], {}))
            continue
        key, sep, value = line.partition("=")
        assert sep and sections, f"not a wg-quick line: {raw!r}"
        sections[-1][1][key.strip()] = value.strip()
    return sections


def split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]

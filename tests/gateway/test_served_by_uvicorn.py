"""The app behind a real uvicorn: lifespan, sockets and headers end to end.

Still against the fake coordinator; this pins what the in-process transport
cannot show (the lifespan as uvicorn runs it, a real client address, a real
oversized upload).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from gateway_fakes import KEY, FakeCoordinator, assert_error, free_port, sample_node

from gateway.app import create_app
from runmesh.v1 import admin_pb2

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(fake: FakeCoordinator) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(fake.target), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_a_request_through_uvicorn_reaches_the_coordinator(
    served: str, fake: FakeCoordinator
) -> None:
    fake.replies["ListNodes"] = admin_pb2.ListNodesResponse(nodes=[sample_node()])

    async with httpx.AsyncClient(base_url=served) as client:
        response = await client.get(
            "/v1/runmesh/nodes", headers={"X-API-Key": "rt_live_k"}
        )

    assert response.status_code == 200
    assert response.json()["meta"]["requestId"] == response.headers["x-request-id"]
    assert fake.last.metadata["x-runmesh-client-addr"] == "127.0.0.1"
    assert fake.last.metadata["authorization"] == "Bearer rt_live_k"


async def test_an_oversized_upload_through_uvicorn_is_413(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        response = await client.post(
            "/v1/runmesh/devices/link/start",
            json={"publicKey": KEY, "pad": "x" * 100_000},
        )

    assert_error(response, 413, "invalid_request")

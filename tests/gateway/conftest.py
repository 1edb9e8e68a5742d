"""Fixtures for the unit tests of the gateway's REST ↔ gRPC translation.

The coordinator is ``gateway_fakes.FakeCoordinator``; nothing under this
folder tests coordinator behaviour.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from gateway_fakes import FakeCoordinator, open_gateway

from runmesh.v1 import admin_pb2_grpc, mesh_pb2_grpc


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoordinator]:
    coordinator = FakeCoordinator()
    server = grpc.aio.server()
    mesh_pb2_grpc.add_MeshServiceServicer_to_server(coordinator, server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(coordinator, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    coordinator.target = f"127.0.0.1:{port}"
    try:
        yield coordinator
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def client(fake: FakeCoordinator) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway(fake.target) as client:
        yield client

"""``/healthz`` (liveness) and ``/readyz`` (the coordinator's gRPC health)."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from gateway_fakes import FakeCoordinator, assert_error, open_gateway
from gateway_processes import Gateway, start_gateway
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from support.processes import Coordinator, free_port, start_coordinator

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def health_servicer() -> AsyncIterator[tuple[health.aio.HealthServicer, str]]:
    """A gRPC server with the standard health service and nothing else."""
    servicer = health.aio.HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@pytest.mark.anyio
async def test_healthz_is_ok_without_asking_the_coordinator() -> None:
    # Nothing listens on the target: liveness must not depend on it.
    async with open_gateway(f"127.0.0.1:{free_port()}") as client:
        response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.anyio
async def test_readyz_is_ready_when_the_coordinator_is_serving(
    health_servicer: tuple[health.aio.HealthServicer, str],
) -> None:
    servicer, target = health_servicer
    await servicer.set("", SERVING)

    async with open_gateway(target) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.anyio
async def test_readyz_is_503_while_the_coordinator_is_not_serving(
    health_servicer: tuple[health.aio.HealthServicer, str],
) -> None:
    servicer, target = health_servicer
    await servicer.set("", NOT_SERVING)

    async with open_gateway(target) as client:
        response = await client.get("/readyz")

    assert_error(response, 503, "unavailable")


@pytest.mark.anyio
async def test_readyz_is_503_when_the_peer_has_no_health_service(
    fake: FakeCoordinator,
) -> None:
    async with open_gateway(fake.target) as client:
        response = await client.get("/readyz")

    assert_error(response, 503, "unavailable")


@pytest.mark.anyio
async def test_readyz_is_503_in_time_when_the_coordinator_hangs() -> None:
    # A listener that accepts and never speaks HTTP/2: the check's own
    # two-second timeout answers, not the client's patience.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        async with open_gateway(target, deadline=30) as client:
            started = time.monotonic()
            response = await client.get("/readyz", timeout=10)

    assert_error(response, 503, "unavailable")
    assert time.monotonic() - started < 5


# ---- against a real coordinator that goes away and comes back ----


@pytest.fixture
def plain_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, int]]:
    port = free_port()
    gateway = start_gateway(tmp_path, f"127.0.0.1:{port}")
    try:
        yield gateway, port
    finally:
        gateway.stop()


def _wait_for_readyz(client: httpx.Client, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (answered := client.get("/readyz").status_code) != status:
        assert time.monotonic() < deadline, f"readyz still {answered}"
        time.sleep(0.2)


def test_readyz_follows_a_real_coordinator_down_and_back_up(
    tmp_path: Path, plain_gateway: tuple[Gateway, int]
) -> None:
    gateway, port = plain_gateway
    coordinator: Coordinator | None = None

    with gateway.client() as client:
        assert_error(client.get("/readyz"), 503, "unavailable")
        assert client.get("/healthz").status_code == 200

        coordinator = start_coordinator(tmp_path, port=port)
        try:
            # The channel retries with a backoff capped at five seconds.
            _wait_for_readyz(client, 200, timeout=15)
            assert client.get("/readyz").json() == {"status": "ready"}

            coordinator.stop()
            _wait_for_readyz(client, 503, timeout=10)
            assert_error(client.get("/readyz"), 503, "unavailable")
            assert client.get("/healthz").status_code == 200

            coordinator = start_coordinator(tmp_path, port=port)
            _wait_for_readyz(client, 200, timeout=15)
        finally:
            coordinator.stop()

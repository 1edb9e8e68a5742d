"""The grpc.aio server of one coordinator process."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from coordinator import housekeeping
from coordinator.rpc import mesh
from coordinator.rpc.admin import AdminServicer
from coordinator.runtime import Runtime
from runmesh.v1 import admin_pb2_grpc

log = logging.getLogger(__name__)

# Streams live for days: transport keepalives notice a vanished client in
# about a minute instead of two hours, and clients may ping every 20 s
# without being sent GOAWAY for too many pings.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    # A reconnect storm of thousands of nodes must queue, not be cancelled
    # by grpc core's default limit of 3,000 waiting calls.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
    ("grpc.so_reuseport", 0),
]


def build_server(runtime: Runtime, listen: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    mesh.add_to_server(mesh.MeshServicer(runtime), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(runtime), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port


async def serve(runtime: Runtime, listen: str, grace: float = 5.0) -> None:
    server, port = build_server(runtime, listen)
    await server.start()
    log.info("coordinator listening on %s (port %d)", listen, port)
    sweeper = asyncio.create_task(
        housekeeping.sweep_forever(runtime.sessions, runtime.settings.change_retention)
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("coordinator stopping")
    sweeper.cancel()
    await server.stop(grace)
    await runtime.close()

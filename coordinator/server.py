"""The grpc.aio server of one coordinator process: listeners, health,
reflection, and a graceful shutdown.

Shutdown on SIGTERM, in order: health turns NOT_SERVING (load balancers
stop sending), new Sync streams are refused, every open stream is told to
reconnect elsewhere (nodes resume from their last version on another
replica), in-flight RPCs get ``grace`` seconds to finish, then presence
still pending is written. Nothing committed is lost: every change is
committed before its RPC answers, and the change log is in the database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator import collector, housekeeping, schema
from coordinator.rpc import mesh
from coordinator.rpc.admin import AdminServicer
from coordinator.rpc.boundary import add_unary_service
from coordinator.runtime import Runtime
from runmesh.hosts import is_loopback
from runmesh.v1 import admin_pb2, mesh_pb2

log = logging.getLogger(__name__)

SERVICES = ("runmesh.v1.MeshService", "runmesh.v1.AdminService")

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
    # A second coordinator on the same port must fail to start, not
    # silently take half of the connections.
    ("grpc.so_reuseport", 0),
]


class ListenError(Exception):
    """The listen address cannot be used as asked."""


def _no_passphrase() -> bytes:
    raise ValueError("the private key is encrypted; give it unencrypted")


@dataclass(frozen=True)
class Listener:
    address: str
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Plaintext on a non-loopback address, explicitly asked for.
    insecure: bool = False
    reflection: bool = False

    def check(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ListenError("--tls-cert and --tls-key must be given together")
        if (
            self.tls_cert is None
            and not self.insecure
            and not is_loopback(self.address.rpartition(":")[0])
        ):
            raise ListenError(
                f"refusing to serve plaintext gRPC on {self.address}: node keys "
                "are safe, but API keys would cross the network in the clear. "
                "Give --tls-cert and --tls-key, or --insecure if something "
                "else encrypts the traffic"
            )

    def credentials(self) -> grpc.ServerCredentials | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        try:
            chain = self.tls_cert.read_bytes()
            key = self.tls_key.read_bytes()
        except OSError as exc:
            raise ListenError(f"cannot read the TLS files: {exc}") from None
        try:
            # grpc would only fail to bind, as if the port were the problem.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            # Never a passphrase prompt: a server starts unattended.
            context.load_cert_chain(self.tls_cert, self.tls_key, _no_passphrase)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ListenError(
                f"cannot use the TLS files {self.tls_cert} and {self.tls_key}: "
                f"{exc} (a PEM certificate chain and its PEM private key)"
            ) from None
        return grpc.ssl_server_credentials([(key, chain)])


def build_server(
    runtime: Runtime, listener: Listener
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    listener.check()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    mesh.add_to_server(mesh.MeshServicer(runtime), server)
    add_unary_service(
        server,
        AdminServicer(runtime),
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if listener.reflection:
        names = (
            mesh_pb2.DESCRIPTOR.services_by_name["MeshService"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    credentials = listener.credentials()
    try:
        if credentials is None:
            port = server.add_insecure_port(listener.address)
        else:
            port = server.add_secure_port(listener.address, credentials)
    except RuntimeError as exc:
        raise ListenError(_bind_failure(listener, str(exc))) from None
    if port == 0:
        raise ListenError(_bind_failure(listener, "nothing was bound"))
    return server, health_servicer, port


def _bind_failure(listener: Listener, detail: str) -> str:
    message = f"cannot listen on {listener.address}: {detail}"
    if listener.tls_cert is not None:
        # grpc says the same when it cannot use a key that Python's ssl took
        # (DSA, secp256k1, ...).
        message += (
            " (the address may be in use, or grpc cannot use the TLS key: "
            "it takes RSA, ECDSA P-256/P-384/P-521 and Ed25519 keys)"
        )
    return message


async def _set_health(servicer: health.aio.HealthServicer, status: int) -> None:
    for name in ("", *SERVICES):
        await servicer.set(name, status)


async def serve(runtime: Runtime, listener: Listener, grace: float = 5.0) -> None:
    server, health_servicer, port = build_server(runtime, listener)
    await server.start()
    # Serving only once the schema is current (an SQLite database was
    # migrated on open; a PostgreSQL one must have been migrated already).
    serving = await schema.is_current(runtime.sessions.engine)
    await _set_health(
        health_servicer,
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    log.info(
        "coordinator listening on %s (port %d, %s)",
        listener.address,
        port,
        "TLS" if listener.tls_cert else "plaintext",
    )
    sweeper = asyncio.create_task(
        housekeeping.sweep_forever(runtime.sessions, runtime.settings.change_retention)
    )
    collecting = asyncio.create_task(collector.keep_collecting())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    await _shut_down(runtime, server, health_servicer, grace)
    sweeper.cancel()
    collecting.cancel()


async def _shut_down(
    runtime: Runtime,
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    grace: float,
) -> None:
    log.info("coordinator stopping: telling nodes to reconnect elsewhere")
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    runtime.streams.shutting_down = True
    asked = runtime.hub.ask_everyone_to_reconnect("coordinator shutting down", 2000)
    deadline = loop_time() + min(grace, 3.0)
    while runtime.hub.stream_count() and loop_time() < deadline:
        await asyncio.sleep(0.05)
    log.info(
        "asked %d streams to reconnect; %d still open",
        asked,
        runtime.hub.stream_count(),
    )
    await server.stop(grace)
    try:
        await runtime.presence.flush()
    except Exception:
        log.exception("could not write pending presence on shutdown")
    await runtime.close()
    log.info("coordinator stopped")


def loop_time() -> float:
    return asyncio.get_running_loop().time()

"""``runmesh-gateway``: run the REST gateway in front of a coordinator.

Every flag also reads an environment variable, so a service unit can set
them without a wrapper script.
"""

from __future__ import annotations

import logging

import click
import uvicorn

from gateway.app import create_app
from gateway.coordinator import DEFAULT_DEADLINE_SECONDS

DEFAULT_COORDINATOR = "127.0.0.1:50443"
DEFAULT_LISTEN = "127.0.0.1:8080"

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _host_port(
    ctx: click.Context, param: click.Parameter, value: str
) -> tuple[str, int]:
    """``HOST:PORT``, with an IPv6 host in brackets: ``[::1]:8080``."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _target(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The RunMesh REST gateway: HTTP/JSON in front of the coordinator's gRPC."""


@main.command()
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    callback=_host_port,
    default=DEFAULT_COORDINATOR,
    show_default=True,
    envvar="RUNMESH_COORDINATOR",
    show_envvar=True,
    help="Address of the coordinator's gRPC listener.",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    callback=_host_port,
    default=DEFAULT_LISTEN,
    show_default=True,
    envvar="RUNMESH_GATEWAY_LISTEN",
    show_envvar=True,
    help="Address to serve HTTP on.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0.1, max=300),
    default=DEFAULT_DEADLINE_SECONDS,
    show_default=True,
    envvar="RUNMESH_GATEWAY_DEADLINE",
    show_envvar=True,
    help="Seconds a coordinator call may take before the client gets 503.",
)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="RUNMESH_LOG_LEVEL",
    show_envvar=True,
    help="Least severe log level to print.",
)
def serve(
    coordinator: tuple[str, int],
    listen: tuple[str, int],
    deadline: float,
    log_level: str,
) -> None:
    """Serve the REST API, translating each request to one coordinator RPC."""
    level = log_level.lower()
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    host, port = listen
    app = create_app(_target(coordinator), deadline=deadline)
    uvicorn.run(app, host=host, port=port, log_level=level)

"""``runmesh-gateway``: run the REST gateway in front of a coordinator.

Every flag also reads an environment variable, so a service unit can set
them without a wrapper script.
"""

from __future__ import annotations

import logging
import ssl
import sys
from pathlib import Path
from typing import NoReturn

import click
import uvicorn

from gateway import metrics
from gateway.app import create_app
from gateway.coordinator import DEFAULT_DEADLINE_SECONDS, ChannelSecurity
from gateway.listener import Listener, ListenError
from runmesh import logs
from runmesh.hosts import is_loopback
from runmesh.options import FiniteFloatRange

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "127.0.0.1:50443"
DEFAULT_LISTEN = "127.0.0.1:8080"

_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")
_PEM_FILE = click.Path(dir_okay=False, path_type=Path)


def _host_port(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """``HOST:PORT``, with an IPv6 host in brackets: ``[::1]:8080``."""
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _ca_certificates(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> bytes | None:
    """The PEM file's bytes, once OpenSSL has read certificates from it."""
    if value is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=value)
        return value.read_bytes()
    except (OSError, ssl.SSLError) as exc:
        raise click.BadParameter(
            f"cannot use {value} as CA certificates: {exc}"
        ) from None


def _target(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _fail(message: str) -> NoReturn:
    click.echo(f"runmesh-gateway: {message}", err=True)
    sys.exit(2)


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
    "--coordinator-ca",
    "coordinator_ca",
    metavar="PEM",
    type=_PEM_FILE,
    callback=_ca_certificates,
    envvar="RUNMESH_COORDINATOR_CA",
    show_envvar=True,
    show_default="none",
    help="Trust these CA certificates for the coordinator's (implies TLS).",
)
@click.option(
    "--coordinator-tls",
    is_flag=True,
    envvar="RUNMESH_COORDINATOR_TLS",
    show_envvar=True,
    show_default="off: plaintext",
    help="Reach the coordinator over TLS, trusting the system's CA roots.",
)
@click.option(
    "--coordinator-server-name",
    metavar="NAME",
    envvar="RUNMESH_COORDINATOR_SERVER_NAME",
    show_envvar=True,
    show_default="the host of --coordinator",
    help="Name the coordinator's certificate must carry (with TLS).",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    callback=_host_port,
    default=DEFAULT_LISTEN,
    show_default=True,
    envvar="RUNMESH_GATEWAY_LISTEN",
    show_envvar=True,
    help="Address to serve HTTP on (HTTPS with --tls-cert).",
)
@click.option(
    "--tls-cert",
    metavar="PEM",
    type=_PEM_FILE,
    envvar="RUNMESH_GATEWAY_TLS_CERT",
    show_envvar=True,
    show_default="none: plaintext HTTP",
    help="PEM certificate chain to serve HTTPS with (with --tls-key).",
)
@click.option(
    "--tls-key",
    metavar="PEM",
    type=_PEM_FILE,
    envvar="RUNMESH_GATEWAY_TLS_KEY",
    show_envvar=True,
    show_default="none",
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="RUNMESH_INSECURE",
    show_envvar=True,
    show_default="off",
    help="Allow plaintext HTTP on a non-loopback address.",
)
@click.option(
    "--deadline",
    type=FiniteFloatRange(min=0.1, max=300),
    default=DEFAULT_DEADLINE_SECONDS,
    show_default=True,
    envvar="RUNMESH_GATEWAY_DEADLINE",
    show_envvar=True,
    help="Seconds a coordinator call may take before the client gets 503.",
)
@click.option(
    "--metrics-listen",
    metavar="HOST:PORT",
    callback=_host_port,
    envvar="RUNMESH_GATEWAY_METRICS_LISTEN",
    show_envvar=True,
    show_default="off",
    help="Serve Prometheus metrics on HOST:PORT.",
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
@click.option(
    "--log-format",
    type=click.Choice(_LOG_FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    envvar="RUNMESH_LOG_FORMAT",
    show_envvar=True,
    help="text for people, json (one object per line) for log pipelines.",
)
def serve(
    coordinator: tuple[str, int],
    coordinator_ca: bytes | None,
    coordinator_tls: bool,
    coordinator_server_name: str | None,
    listen: tuple[str, int],
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure: bool,
    deadline: float,
    metrics_listen: tuple[str, int] | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the REST API, translating each request to one coordinator RPC.

    Without --tls-cert/--tls-key it serves plaintext HTTP, on a loopback
    address only unless --insecure is given.
    """
    level = log_level.lower()
    logs.configure(level, log_format.lower())

    listener = _checked(
        Listener(*listen, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)
    )
    security = _channel_security(
        coordinator_ca, coordinator_tls, coordinator_server_name
    )
    _warn_if_exposed(coordinator, security)

    # Before uvicorn.run, which does not return: the metrics server is a
    # thread of this process, started while nothing else runs yet.
    if metrics_listen is not None:
        _serve_metrics(metrics_listen)

    target = _target(coordinator)
    app = create_app(target, deadline=deadline, security=security)
    log.info(
        "gateway serving %s on %s; coordinator %s over %s",
        listener.describe(),
        listener.address,
        target,
        security.describe(),
    )
    uvicorn.run(
        app,
        host=listener.host,
        port=listener.port,
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
        log_level=level,
        # The log set-up is runmesh.logs'; uvicorn's access line would show
        # query strings and client addresses, so gateway.access writes it.
        log_config=None,
        access_log=False,
    )


def _checked(listener: Listener) -> Listener:
    try:
        listener.check()
    except ListenError as exc:
        _fail(str(exc))
    return listener


def _channel_security(
    ca: bytes | None, tls: bool, server_name: str | None
) -> ChannelSecurity:
    if server_name is not None and ca is None and not tls:
        raise click.UsageError(
            "--coordinator-server-name needs --coordinator-ca or --coordinator-tls"
        )
    return ChannelSecurity(
        tls=tls or ca is not None, root_certificates=ca, server_name=server_name
    )


def _warn_if_exposed(coordinator: tuple[str, int], security: ChannelSecurity) -> None:
    # A warning, not a refusal: lab and demo set-ups reach a coordinator on
    # a private bridge in plaintext, and the coordinator's own listener rule
    # already refuses plaintext off loopback unless told --insecure.
    if security.tls or is_loopback(coordinator[0]):
        return
    log.warning(
        "the coordinator %s is not on loopback and the channel is plaintext: "
        "API keys cross the network in the clear; give --coordinator-ca or "
        "--coordinator-tls unless something else encrypts the traffic",
        _target(coordinator),
    )


def _serve_metrics(address: tuple[str, int]) -> None:
    try:
        metrics.serve_metrics(*address)
    except OSError as exc:
        _fail(f"cannot serve metrics on {_target(address)}: {exc}")
    log.info("metrics on http://%s/metrics", _target(address))

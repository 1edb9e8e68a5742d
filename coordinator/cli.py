"""``runmesh-coordinator``: serve the mesh and administer its database."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import TypeVar

import click

from coordinator import db, metrics, operator_cli, server
from coordinator.cli_common import DB_OPTION, create_if_missing, fail, run
from coordinator.hub import Coalescing
from coordinator.presence import PresenceTiming
from coordinator.ratelimit import Policy
from coordinator.runtime import open_runtime
from coordinator.settings import Settings
from runmesh import logs
from runmesh.options import FiniteFloatRange

T = TypeVar("T")


@click.group()
@click.option(
    "--log-level",
    show_envvar=True,
    envvar="RUNMESH_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    envvar="RUNMESH_LOG_FORMAT",
    show_envvar=True,
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="text for people, json (one object per line) for log pipelines.",
)
def main(log_level: str, log_format: str) -> None:
    """The RunMesh coordinator: owner of all mesh state, served over gRPC."""
    logs.configure(log_level, log_format)


def _ip_list(values: tuple[str, ...]) -> list[str]:
    addresses = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                addresses.append(str(ipaddress.ip_address(part)))
            except ValueError:
                raise click.BadParameter(
                    f"not an IP address: {part!r}", param_hint="--trusted-proxy"
                ) from None
    return addresses


def _listen_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return value


@main.command()
@DB_OPTION
@click.option(
    "--listen",
    show_envvar=True,
    envvar="RUNMESH_LISTEN",
    default="127.0.0.1:50443",
    show_default=True,
    callback=_listen_address,
    help="gRPC listen address HOST:PORT.",
)
@click.option(
    "--advertise",
    show_envvar=True,
    envvar="RUNMESH_ADVERTISE",
    default=None,
    callback=lambda c, p, v: v if v is None else _listen_address(c, p, v),
    help="HOST:PORT devices are told to open Sync on (default: --listen).",
)
@click.option(
    "--approve-url",
    show_envvar=True,
    envvar="RUNMESH_APPROVE_URL",
    default=Settings.approve_url,
    show_default=True,
    help="Base URL of the approval page that link/start returns.",
)
@click.option(
    "--link-ttl",
    show_envvar=True,
    envvar="RUNMESH_LINK_TTL",
    type=click.IntRange(10, 86400),
    default=600,
    show_default=True,
    help="Seconds a link code stays valid.",
)
@click.option(
    "--link-interval",
    show_envvar=True,
    envvar="RUNMESH_LINK_INTERVAL",
    type=click.IntRange(1, 60),
    default=5,
    show_default=True,
    help="Seconds a device must wait between polls.",
)
@click.option(
    "--link-starts-per-minute",
    show_envvar=True,
    envvar="RUNMESH_LINK_STARTS_PER_MINUTE",
    type=click.IntRange(1, 1_000_000),
    default=Policy.starts_per_source,
    show_default=True,
    help="Link starts allowed per client address per minute.",
)
@click.option(
    "--failed-approvals-per-minute",
    show_envvar=True,
    envvar="RUNMESH_FAILED_APPROVALS_PER_MINUTE",
    type=click.IntRange(1, 1_000_000),
    default=Policy.approvals_per_key,
    show_default=True,
    help="Failed approvals allowed per API key per minute (3x per address).",
)
@click.option(
    "--coalesce-ms",
    show_envvar=True,
    envvar="RUNMESH_COALESCE_MS",
    type=click.IntRange(0, 5000),
    default=round(Coalescing.quiet * 1000),
    show_default=True,
    help="Deliver changes once the log was quiet this long (max 25x later; "
    "in a burst of changes 10x as quiet, max 50x later).",
)
@click.option(
    "--presence-grace",
    show_envvar=True,
    envvar="RUNMESH_PRESENCE_GRACE",
    type=FiniteFloatRange(0, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a node whose stream ended stays online, awaiting a reconnect.",
)
@click.option(
    "--presence-heartbeat",
    show_envvar=True,
    envvar="RUNMESH_PRESENCE_HEARTBEAT",
    type=FiniteFloatRange(0.5, 3600),
    default=30.0,
    show_default=True,
    help="Seconds between refreshes of held nodes' last-seen time; a node "
    "online in the database but unseen for 3 of these is reported offline.",
)
@click.option(
    "--change-retention",
    show_envvar=True,
    envvar="RUNMESH_CHANGE_RETENTION",
    type=click.IntRange(60, 90 * 86400),
    default=86400,
    show_default=True,
    help="Seconds the change log keeps changes (how far back a node can resume).",
)
@click.option(
    "--keepalive",
    show_envvar=True,
    envvar="RUNMESH_KEEPALIVE",
    type=FiniteFloatRange(0.5, 600),
    default=Settings.keepalive_interval,
    show_default=True,
    help="Seconds between keepalives on each Sync stream.",
)
@click.option(
    "--stream-queue-limit",
    envvar="RUNMESH_STREAM_QUEUE_LIMIT",
    show_envvar=True,
    type=click.IntRange(1, 100_000),
    default=64,
    show_default=True,
    help="Deltas queued per stream before a slow stream gets a full map instead.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    envvar="RUNMESH_TRUSTED_PROXIES",
    show_envvar=True,
    multiple=True,
    default=("127.0.0.1", "::1"),
    show_default=True,
    help="IP of a gateway whose forwarded client address rate limits believe "
    "(repeat for several).",
)
@click.option(
    "--tls-cert",
    envvar="RUNMESH_TLS_CERT",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate chain for the gRPC listener (with --tls-key).",
)
@click.option(
    "--tls-key",
    envvar="RUNMESH_TLS_KEY",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--insecure",
    envvar="RUNMESH_INSECURE",
    show_envvar=True,
    is_flag=True,
    help="Allow plaintext on a non-loopback address.",
)
@click.option(
    "--metrics-listen",
    envvar="RUNMESH_METRICS_LISTEN",
    show_envvar=True,
    default=None,
    callback=lambda c, p, v: v if v is None else _listen_address(c, p, v),
    help="Serve Prometheus metrics on HOST:PORT (off by default).",
)
@click.option(
    "--reflection",
    envvar="RUNMESH_REFLECTION",
    show_envvar=True,
    is_flag=True,
    help="Enable gRPC server reflection (for grpcurl).",
)
@click.option(
    "--shutdown-grace",
    envvar="RUNMESH_SHUTDOWN_GRACE",
    show_envvar=True,
    type=FiniteFloatRange(0, 60),
    default=5.0,
    show_default=True,
    help="Seconds in-flight RPCs get to finish on SIGTERM.",
)
def serve(
    db_url: str,
    listen: str,
    advertise: str | None,
    approve_url: str,
    link_ttl: int,
    link_interval: int,
    link_starts_per_minute: int,
    failed_approvals_per_minute: int,
    coalesce_ms: int,
    presence_grace: float,
    presence_heartbeat: float,
    change_retention: int,
    keepalive: float,
    stream_queue_limit: int,
    trusted_proxies: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure: bool,
    metrics_listen: str | None,
    reflection: bool,
    shutdown_grace: float,
) -> None:
    """Run the coordinator's gRPC server (migrates an SQLite database first).

    Without --tls-cert/--tls-key it serves plaintext, on a loopback address
    only unless --insecure is given.
    """
    listener = server.Listener(
        address=listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        reflection=reflection,
    )
    try:
        listener.check()
    except server.ListenError as exc:
        fail(str(exc))
    settings = Settings(
        advertise_target=advertise or listen,
        approve_url=approve_url,
        link_ttl=dt.timedelta(seconds=link_ttl),
        link_interval=link_interval,
        keepalive_interval=keepalive,
        coalescing=Coalescing.from_quiet(coalesce_ms / 1000),
        presence=PresenceTiming(grace=presence_grace, heartbeat=presence_heartbeat),
        change_retention=dt.timedelta(seconds=change_retention),
        stream_queue_limit=stream_queue_limit,
        trusted_proxies=frozenset(_ip_list(trusted_proxies)),
        limits=Policy(
            approvals_per_key=failed_approvals_per_minute,
            approvals_per_source=3 * failed_approvals_per_minute,
            polls_per_source=max(30, 3 * failed_approvals_per_minute),
            starts_per_source=link_starts_per_minute,
        ),
    )

    async def go() -> None:
        create_if_missing(db_url)
        is_sqlite = db.is_sqlite(db.driver_url(db_url))
        try:
            runtime = await open_runtime(db_url, settings, migrate=is_sqlite)
        except RuntimeError as exc:
            fail(str(exc))
        if metrics_listen:
            try:
                metrics.serve_metrics(metrics_listen)
            except OSError as exc:
                await runtime.close()
                fail(f"cannot serve metrics on {metrics_listen}: {exc}")
        try:
            await server.serve(runtime, listener, shutdown_grace)
        except server.ListenError as exc:
            await runtime.close()
            fail(str(exc))

    run(go)


for command in operator_cli.COMMANDS:
    main.add_command(command)

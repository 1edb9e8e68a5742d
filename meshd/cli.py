"""``meshd``: link this device, then keep its WireGuard interface in the mesh."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from meshd import linking
from meshd.channel import InvalidTarget, check_target
from meshd.daemon import Daemon, UpOptions
from meshd.errors import MeshdError
from meshd.state import StateDir
from meshd.wireguard.backend import WireGuardError
from meshd.wireguard.userspace import (
    DEFAULT_LOG_DIR,
    InvalidInterfaceName,
    UserspaceBackend,
    check_interface_name,
)
from runmesh.v1 import mesh_pb2

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class InterfaceName(click.ParamType[str, Any]):
    name = "NAME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            check_interface_name(str(value))
        except InvalidInterfaceName as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


class CoordinatorTarget(click.ParamType[str, Any]):
    name = "HOST:PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            return check_target(str(value))
        except InvalidTarget as exc:
            self.fail(str(exc), param, ctx)


STATE_DIR = click.option(
    "--state-dir",
    envvar="RUNMESH_STATE_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/runmesh"),
    show_default=True,
    help="Directory holding the node's key and identity.",
)


def interface_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--interface",
        envvar="RUNMESH_INTERFACE",
        show_envvar=True,
        type=InterfaceName(),
        default="runmesh0",
        show_default=True,
        help=help,
    )


@contextmanager
def _reporting_errors() -> Iterator[None]:
    """The one place meshd's errors become a message and an exit status."""
    try:
        yield
    except MeshdError as exc:
        click.echo(f"meshd: {exc}", err=True)
        sys.exit(exc.exit_code)
    except WireGuardError as exc:
        click.echo(f"meshd: WireGuard: {exc}", err=True)
        sys.exit(5)
    except KeyboardInterrupt:
        sys.exit(130)


def _run(work: Coroutine[Any, Any, T]) -> T:
    with _reporting_errors():
        return asyncio.run(work)


@click.group()
@click.option(
    "--log-level",
    envvar="RUNMESH_LOG_LEVEL",
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="How much meshd logs (to stderr).",
)
def main(log_level: str) -> None:
    """The RunMesh node daemon."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@main.command()
@click.option(
    "--coordinator",
    envvar="RUNMESH_COORDINATOR",
    show_envvar=True,
    type=CoordinatorTarget(),
    required=True,
    help="Coordinator gRPC address HOST:PORT (IPv6 in brackets).",
)
@STATE_DIR
@click.option(
    "--label",
    envvar="RUNMESH_LABEL",
    show_envvar=True,
    default=None,
    help="Device label shown to whoever approves the code (default: host name).",
)
def link(coordinator: str, state_dir: Path, label: str | None) -> None:
    """Link this device: print a code to approve, wait until it is approved.

    Exits 0 once approved; non-zero if the code expires or is denied.
    """

    def show(started: mesh_pb2.StartLinkResponse) -> None:
        click.echo(f"code: {started.code}")
        click.echo(f"approve at: {started.url}")
        click.echo(
            f"expires at: {started.expires_at.ToDatetime().isoformat()}Z", err=True
        )
        sys.stdout.flush()

    state = StateDir(state_dir)
    identity = _run(linking.link_device(coordinator, state, label, show))
    with _reporting_errors():
        state.save_identity(identity)
    click.echo(f"linked as {identity.name} ({identity.ipv4}, {identity.ipv6})")


@main.command()
@STATE_DIR
@interface_option("WireGuard interface name (unique on the host, 1-15 characters).")
@click.option(
    "--backend",
    envvar="RUNMESH_BACKEND",
    show_envvar=True,
    type=click.Choice(["userspace"]),
    default="userspace",
    show_default=True,
    help="How WireGuard is driven: userspace = wireguard-go over UAPI.",
)
@click.option(
    "--listen-port",
    envvar="RUNMESH_LISTEN_PORT",
    show_envvar=True,
    type=click.IntRange(1, 65535),
    default=51820,
    show_default=True,
    help="UDP port WireGuard listens on; peers learn it from the coordinator.",
)
@click.option(
    "--mtu",
    envvar="RUNMESH_MTU",
    show_envvar=True,
    type=click.IntRange(1280, 9000),
    default=1420,
    show_default=True,
    help="MTU of the WireGuard interface.",
)
@click.option(
    "--coordinator",
    "coordinators",
    envvar="RUNMESH_COORDINATOR",
    show_envvar=True,
    type=CoordinatorTarget(),
    multiple=True,
    help="Coordinator HOST:PORT, tried in turn (default: the one linked with).",
)
@click.option(
    "--reconcile-interval",
    envvar="RUNMESH_RECONCILE_INTERVAL",
    show_envvar=True,
    type=click.FloatRange(0.5, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between checks that the device still matches the map.",
)
@click.option(
    "--keepalive",
    envvar="RUNMESH_KEEPALIVE",
    show_envvar=True,
    type=click.FloatRange(0.5, 600),
    default=15.0,
    show_default=True,
    help="Seconds between keepalives sent to the coordinator.",
)
@click.option(
    "--wireguard-log",
    envvar="RUNMESH_WIREGUARD_LOG",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default=f"{DEFAULT_LOG_DIR}/wireguard-go-INTERFACE.log",
    help="File wireguard-go's output is appended to.",
)
def up(
    state_dir: Path,
    interface: str,
    backend: str,
    listen_port: int,
    mtu: int,
    coordinators: tuple[str, ...],
    reconcile_interval: float,
    keepalive: float,
    wireguard_log: Path | None,
) -> None:
    """Bring the WireGuard interface up and keep it in step with the mesh."""
    options = UpOptions(
        interface=interface,
        listen_port=listen_port,
        mtu=mtu,
        coordinators=coordinators,
        reconcile_interval=reconcile_interval,
        keepalive_interval=keepalive,
    )

    async def run() -> None:
        backend = UserspaceBackend(log_path=wireguard_log)
        daemon = Daemon(StateDir(state_dir), backend, options)
        await daemon.run()

    _run(run())


@main.command()
@STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_dir: Path, as_json: bool) -> None:
    """Show this node's identity and its last applied map."""
    state = StateDir(state_dir)
    with _reporting_errors():
        identity = state.load_identity()
        saved = state.load_map()
    peers = list(saved.peers.values()) if saved else []
    version = saved.version if saved else 0
    report = {"node": identity.__dict__, "version": version, "peers": peers}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"node     {identity.name} ({identity.node_id})")
    click.echo(f"address  {identity.ipv4} {identity.ipv6}")
    click.echo(f"version  {version}")
    for peer in peers:
        click.echo(f"peer     {peer.get('name', '')} {peer.get('publicKey', '')}")


@main.command()
@interface_option("WireGuard interface to remove.")
def down(interface: str) -> None:
    """Remove the WireGuard interface (and stop its wireguard-go)."""

    async def run() -> None:
        backend = UserspaceBackend()
        backend.adopt(interface)
        await backend.remove()

    _run(run())

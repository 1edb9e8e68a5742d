"""``meshd``: link this device, then keep its WireGuard interface in the mesh."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from meshd import linking
from meshd.daemon import Daemon, UpOptions
from meshd.errors import MeshdError
from meshd.state import StateDir
from meshd.wireguard.backend import WireGuardError
from meshd.wireguard.userspace import UserspaceBackend
from runmesh.v1 import mesh_pb2

T = TypeVar("T")

STATE_DIR = click.option(
    "--state-dir",
    envvar="RUNMESH_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/runmesh"),
    show_default=True,
    help="Directory holding the node's key and identity.",
)


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except MeshdError as exc:
        click.echo(f"meshd: {exc}", err=True)
        sys.exit(exc.exit_code)
    except WireGuardError as exc:
        click.echo(f"meshd: WireGuard: {exc}", err=True)
        sys.exit(5)
    except KeyboardInterrupt:
        sys.exit(130)


@click.group()
@click.option(
    "--log-level",
    envvar="RUNMESH_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
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
    required=True,
    help="Coordinator gRPC address HOST:PORT.",
)
@STATE_DIR
@click.option("--label", envvar="RUNMESH_LABEL", default=None, help="Device label.")
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
    state.save_identity(identity)
    click.echo(f"linked as {identity.name} ({identity.ipv4}, {identity.ipv6})")


@main.command()
@STATE_DIR
@click.option(
    "--interface",
    envvar="RUNMESH_INTERFACE",
    default="runmesh0",
    show_default=True,
    help="WireGuard interface name (unique on the host, at most 15 characters).",
)
@click.option(
    "--backend",
    envvar="RUNMESH_BACKEND",
    type=click.Choice(["userspace"]),
    default="userspace",
    show_default=True,
    help="How WireGuard is driven: userspace = wireguard-go over UAPI.",
)
@click.option(
    "--listen-port",
    envvar="RUNMESH_LISTEN_PORT",
    type=click.IntRange(1, 65535),
    default=51820,
    show_default=True,
)
@click.option(
    "--mtu", envvar="RUNMESH_MTU", type=click.IntRange(1280, 9000), default=1420
)
@click.option(
    "--coordinator",
    "coordinators",
    envvar="RUNMESH_COORDINATOR",
    multiple=True,
    help="Coordinator HOST:PORT, tried in turn (default: the one linked with).",
)
@click.option(
    "--reconcile-interval",
    envvar="RUNMESH_RECONCILE_INTERVAL",
    type=click.FloatRange(0.5, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between checks that the device still matches the map.",
)
@click.option(
    "--keepalive",
    envvar="RUNMESH_KEEPALIVE",
    type=click.FloatRange(0.5, 600),
    default=15.0,
    show_default=True,
    help="Seconds between keepalives sent to the coordinator.",
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
        daemon = Daemon(StateDir(state_dir), UserspaceBackend(), options)
        await daemon.run()

    _run(run())


@main.command()
@STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_dir: Path, as_json: bool) -> None:
    """Show this node's identity and its last applied map."""
    state = StateDir(state_dir)
    try:
        identity = state.load_identity()
    except MeshdError as exc:
        click.echo(f"meshd: {exc}", err=True)
        sys.exit(exc.exit_code)
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
@click.option(
    "--interface",
    envvar="RUNMESH_INTERFACE",
    default="runmesh0",
    show_default=True,
)
def down(interface: str) -> None:
    """Remove the WireGuard interface (and stop its wireguard-go)."""

    async def run() -> None:
        backend = UserspaceBackend()
        backend.adopt(interface)
        await backend.remove()

    _run(run())

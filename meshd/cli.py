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

from meshd import linking, rotation
from meshd import status as node_status
from meshd.backends import BACKEND_NAMES, make_backend
from meshd.channel import ChannelSecurity, InvalidTarget, check_target, use_security
from meshd.daemon import Daemon, UpOptions
from meshd.errors import MeshdError
from meshd.state import StateDir
from meshd.wireguard.backend import (
    InvalidInterfaceName,
    WireGuardBackend,
    WireGuardError,
    check_interface_name,
)
from meshd.wireguard.kernel import KernelBackend
from meshd.wireguard.userspace import DEFAULT_LOG_DIR
from runmesh.options import FiniteFloatRange
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


BACKEND = click.option(
    "--backend",
    envvar="RUNMESH_BACKEND",
    show_envvar=True,
    type=click.Choice(list(BACKEND_NAMES)),
    default="auto",
    show_default=True,
    help="How WireGuard is driven: kernel (netlink), userspace (wireguard-go "
    "over UAPI), or auto (kernel when the module is there, else userspace).",
)


def backend_name(backend: WireGuardBackend) -> str:
    return "kernel" if isinstance(backend, KernelBackend) else "userspace"


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


def _set_security(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Collect the TLS options into the channel security, once all are read."""
    ctx.meta.setdefault("runmesh_tls", {})[param.name] = value
    given = ctx.meta["runmesh_tls"]
    if len(given) == 3:
        ca_path = given["ca"]
        ca = None
        if ca_path is not None:
            try:
                ca = Path(ca_path).read_bytes()
            except OSError as exc:
                message = f"cannot read {ca_path}: {exc.strerror}"
                raise click.BadParameter(message) from None
            if b"-----BEGIN CERTIFICATE-----" not in ca:
                raise click.BadParameter(f"{ca_path} holds no PEM certificate")
        use_security(
            ChannelSecurity(
                tls=bool(given["tls"] or ca is not None),
                ca=ca,
                server_name=given["server_name"],
            )
        )
    return value


def tls_options(command: F) -> F:
    """--ca / --tls / --server-name: TLS to the coordinator."""
    for option in reversed(
        (
            click.option(
                "--ca",
                envvar="RUNMESH_CA",
                show_envvar=True,
                type=click.Path(dir_okay=False),
                default=None,
                expose_value=False,
                callback=_set_security,
                help="PEM CA to trust for the coordinator's certificate (implies TLS).",
            ),
            click.option(
                "--tls",
                envvar="RUNMESH_TLS",
                show_envvar=True,
                is_flag=True,
                expose_value=False,
                callback=_set_security,
                help="Reach the coordinator over TLS, trusting the system's roots.",
            ),
            click.option(
                "--server-name",
                envvar="RUNMESH_SERVER_NAME",
                show_envvar=True,
                default=None,
                expose_value=False,
                callback=_set_security,
                help="Name to check in the coordinator's certificate "
                "(default: the host of the address).",
            ),
        )
    ):
        command = option(command)
    return command


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
@tls_options
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
@tls_options
@STATE_DIR
@interface_option("WireGuard interface name (unique on the host, 1-15 characters).")
@BACKEND
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
    type=FiniteFloatRange(0.5, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between checks that the device still matches the map.",
)
@click.option(
    "--keepalive",
    envvar="RUNMESH_KEEPALIVE",
    show_envvar=True,
    type=FiniteFloatRange(0.5, 600),
    default=25.0,
    show_default=True,
    help="Seconds between keepalives sent to the coordinator.",
)
@click.option(
    "--persistent-keepalive",
    envvar="RUNMESH_PERSISTENT_KEEPALIVE",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=None,
    show_default="what the coordinator sends (25)",
    help="Seconds between WireGuard keepalives to every peer; 0 turns them off.",
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
    persistent_keepalive: int | None,
    wireguard_log: Path | None,
) -> None:
    """Bring the WireGuard interface up and keep it in step with the mesh.

    Writes what it is doing to DIR/status.json (see `meshd status`).
    """
    state = StateDir(state_dir)
    with _reporting_errors():
        state.load_node()  # a broken state dir stops us before WireGuard
        chosen = make_backend(backend, wireguard_log=wireguard_log)
    options = UpOptions(
        interface=interface,
        listen_port=listen_port,
        mtu=mtu,
        coordinators=coordinators,
        reconcile_interval=reconcile_interval,
        keepalive_interval=keepalive,
        persistent_keepalive=persistent_keepalive,
        backend_name=backend_name(chosen),
    )

    async def run() -> None:
        daemon = Daemon(state, chosen, options)
        await daemon.run()

    _run(run())


@main.command()
@STATE_DIR
@click.option(
    "--interface",
    envvar="RUNMESH_INTERFACE",
    show_envvar=True,
    type=InterfaceName(),
    default=None,
    show_default="the one `meshd up` uses, else runmesh0",
    help="WireGuard interface to read peers, handshakes and bytes from.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_dir: Path, interface: str | None, as_json: bool) -> None:
    """Show the node, its stream and its peers as the device reports them.

    The device is only read (handshakes, bytes), never changed.
    """
    state = StateDir(state_dir)
    with _reporting_errors():
        identity = state.load_identity()
        saved = state.load_map()
        stream = state.load_status()
    if interface is None:
        interface = _interface_from_status(stream)
    named_backend = (stream or {}).get("backend")
    with _reporting_errors():
        reader = make_backend("kernel" if named_backend == "kernel" else "userspace")
        reader.adopt(interface)
    report = _run(node_status.build_report(identity, saved, stream, reader))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for line in node_status.render(report):
        click.echo(line)


def _interface_from_status(stream: dict[str, Any] | None) -> str:
    named = (stream or {}).get("interface")
    if not isinstance(named, str):
        # Regression: a status.json without one read as the interface "None".
        return "runmesh0"
    try:
        check_interface_name(named)
    except InvalidInterfaceName:
        return "runmesh0"
    return named


@main.command("rotate-key")
@tls_options
@STATE_DIR
@click.option(
    "--coordinator",
    envvar="RUNMESH_COORDINATOR",
    show_envvar=True,
    type=CoordinatorTarget(),
    default=None,
    help="Coordinator HOST:PORT (default: the one linked with).",
)
@click.option(
    "--timeout",
    envvar="RUNMESH_ROTATE_TIMEOUT",
    show_envvar=True,
    type=FiniteFloatRange(1, 600),
    default=rotation.ROTATE_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the coordinator to confirm the new key.",
)
def rotate_key(state_dir: Path, coordinator: str | None, timeout: float) -> None:
    """Replace this node's key and print the new public key.

    The new key is kept in DIR/private.key.next until the coordinator
    confirms it; a running `meshd up` picks it up by itself.
    """
    state = StateDir(state_dir)
    new_public_key = _run(rotation.rotate_key(state, coordinator, timeout))
    click.echo(new_public_key)


@main.command()
@interface_option("WireGuard interface to remove.")
@BACKEND
def down(interface: str, backend: str) -> None:
    """Remove the WireGuard interface (and stop its wireguard-go)."""

    async def run() -> None:
        chosen = make_backend(backend)
        chosen.adopt(interface)
        await chosen.remove()

    _run(run())

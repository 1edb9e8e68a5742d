"""WireGuard in userspace: a wireguard-go process per interface, driven over UAPI.

The process is started in a session of its own and is not tied to meshd's
lifetime: `close()` leaves it running, a later `start()` attaches to it when
its socket answers, and only `remove()` stops it. It is spawned with
posix_spawn rather than asyncio's subprocess support because an asyncio
subprocess transport kills its child when it is closed or collected, which
is the opposite of what a data plane that outlives meshd needs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

from .backend import WireGuardError
from .device import DeviceState, Operation
from .netconf import NetworkInterface
from .uapi import UapiClient, UapiError, socket_path_for

logger = logging.getLogger(__name__)

IFNAMSIZ = 16  # including the terminating NUL
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LOG_TAIL_BYTES = 2000


class WireGuardGoError(WireGuardError):
    """wireguard-go could not be started or stopped."""


class UserspaceBackend:
    """A WireGuardBackend over wireguard-go.

    `netns` runs wireguard-go and the address changes in a named network
    namespace (tests, and hosts that keep the mesh in one); meshd normally
    leaves it None. Note the UAPI socket directory is shared by every
    network namespace, so interface names must be unique on the host.
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        wireguard_go: str = "wireguard-go",
        log_path: Path | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.netns = netns
        self.wireguard_go = wireguard_go
        self.log_path = log_path
        self.start_timeout = start_timeout
        self._interface: str | None = None
        self._addresses: list[str] = []
        self._mtu = 0
        self._pid: int | None = None  # set only for a process we spawned

    @property
    def interface(self) -> str:
        if self._interface is None:
            raise WireGuardError("the backend has not been started")
        return self._interface

    @property
    def pid(self) -> int | None:
        """The wireguard-go this backend spawned; None when it attached."""
        return self._pid

    def adopt(self, interface: str) -> None:
        """Name the device to manage without starting or changing it
        (for `meshd down`, which only removes what is there)."""
        _check_interface_name(interface)
        self._interface = interface

    async def start(self, interface: str, addresses: list[str], mtu: int) -> None:
        _check_interface_name(interface)
        self._interface = interface
        self._addresses = list(addresses)
        self._mtu = mtu

        if await self._client().answers():
            await self._check_attachable()
            logger.info("attached to running wireguard-go interface=%s", interface)
        else:
            await self._spawn()
        await self._configure_link()

    async def read(self) -> DeviceState:
        return await self._client().get()

    async def apply(self, ops: list[Operation]) -> None:
        await self._client().apply(ops)

    async def ensure_running(self) -> bool:
        """Restart wireguard-go if it is gone; True if it was restarted.

        A restarted device is empty apart from its addresses, which are set
        again here: the caller re-applies keys and peers by reading and
        planning as usual.
        """
        if await self._client().answers():
            return False

        logger.warning(
            "wireguard-go is not answering, restarting interface=%s", self.interface
        )
        # A hung wireguard-go still holds the socket name; a new one would
        # refuse to start until it is gone.
        pid = await self._serving_pid()
        if pid is not None:
            await self._stop_process(pid)
        await self._spawn()
        await self._configure_link()
        return True

    async def remove(self) -> None:
        pid = await self._serving_pid()
        if pid is not None:
            await self._stop_process(pid)
        await self._link().delete()
        socket_path_for(self.interface).unlink(missing_ok=True)
        logger.info("removed wireguard-go interface=%s", self.interface)
        self._pid = None

    async def close(self) -> None:
        if self._interface is not None:
            logger.info(
                "leaving wireguard-go running interface=%s pid=%s",
                self._interface,
                self._pid if self._pid is not None else "attached",
            )
        # Forget the child without reaping or signalling it: it belongs to
        # the host now, and to whichever meshd attaches next.
        self._pid = None

    def _client(self) -> UapiClient:
        return UapiClient(socket_path_for(self.interface))

    def _link(self) -> NetworkInterface:
        return NetworkInterface(self.interface, netns=self.netns)

    async def _check_attachable(self) -> None:
        # The socket directory is shared across network namespaces: a socket
        # answering may belong to a same-named device of another node.
        if not await self._link().exists():
            raise WireGuardGoError(
                f"{socket_path_for(self.interface)} answers but interface "
                f"{self.interface} is not in this network namespace: another "
                "node on this host uses the same interface name"
            )

    async def _configure_link(self) -> None:
        link = self._link()
        await link.wait()
        await link.set_mtu(self._mtu)
        await link.set_addresses(self._addresses)
        await link.up()

    async def _spawn(self) -> None:
        log_path = self.log_path or _default_log_path(self.interface)
        log_start = log_path.stat().st_size if log_path.exists() else 0
        # A stale socket from a killed wireguard-go is replaced by the new one;
        # wireguard-go only refuses a socket that still answers.
        pid = _spawn_detached(self._command(), log_path)
        self._pid = pid
        logger.info(
            "started wireguard-go interface=%s pid=%d log=%s",
            self.interface,
            pid,
            log_path,
        )

        deadline = time.monotonic() + self.start_timeout
        while not await self._client().answers():
            status = _exit_status(pid)
            if status is not None:
                self._pid = None
                raise WireGuardGoError(
                    f"wireguard-go for {self.interface} exited ({status}) before "
                    f"its socket answered: {_log_tail(log_path, log_start)}"
                )
            if time.monotonic() > deadline:
                await self._stop_process(pid)
                self._pid = None
                raise WireGuardGoError(
                    f"wireguard-go for {self.interface} did not open "
                    f"{socket_path_for(self.interface)} within "
                    f"{self.start_timeout:g}s: {_log_tail(log_path, log_start)}"
                )
            await asyncio.sleep(0.05)

    def _command(self) -> list[str]:
        command = [self.wireguard_go, "-f", self.interface]
        if self.netns is not None:
            # `ip netns exec` execs in place, so the pid is wireguard-go's.
            command = ["ip", "netns", "exec", self.netns, *command]
        return command

    async def _serving_pid(self) -> int | None:
        """Our child if we spawned one, else whoever serves the socket."""
        if self._pid is not None:
            return self._pid
        try:
            return await self._client().server_pid()
        except UapiError:
            return None

    async def _stop_process(self, pid: int) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; wireguard-go removes its
        socket and TUN device itself on SIGTERM."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return
                await asyncio.sleep(0.05)
        raise WireGuardGoError(f"wireguard-go pid {pid} survived SIGKILL")


def _check_interface_name(name: str) -> None:
    if not 0 < len(name) < IFNAMSIZ or "/" in name or name.strip() != name:
        raise ValueError(f"interface name {name!r} must be 1..15 characters, no '/'")


def _default_log_path(interface: str) -> Path:
    return Path(tempfile.gettempdir()) / f"runmesh-wireguard-go-{interface}.log"


def _spawn_detached(command: list[str], log_path: Path) -> int:
    env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return os.posix_spawnp(
            command[0],
            command,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            # Its own session: a Ctrl-C or a signal to meshd's process group
            # does not reach the data plane.
            setsid=True,
        )
    except FileNotFoundError:
        raise WireGuardGoError(
            f"{command[0]} is not installed or not on PATH"
        ) from None
    finally:
        os.close(log_fd)


def _exit_status(pid: int) -> str | None:
    """How our child `pid` ended, reaping it; None while it runs."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "already reaped"
    if reaped == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _alive(pid: int) -> bool:
    # A child of ours that exited stays a zombie, visible to kill(0), until
    # it is reaped; reaping first tells the two apart.
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its own parent (or init) reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _log_tail(log_path: Path, start: int) -> str:
    try:
        with log_path.open("rb") as log:
            log.seek(max(start, log_path.stat().st_size - LOG_TAIL_BYTES))
            text = log.read().decode(errors="replace").strip()
    except OSError as exc:
        return f"(log {log_path} unreadable: {exc.strerror})"
    return text or f"(nothing in {log_path})"

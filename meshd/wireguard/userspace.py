"""WireGuard in userspace: a wireguard-go process per interface, driven over UAPI.

The process is started in a session of its own and is not tied to meshd's
lifetime: `close()` leaves it running, a later `start()` attaches to it when
its socket answers, and only `remove()` stops it. It is spawned with
posix_spawn rather than asyncio's subprocess support because an asyncio
subprocess transport kills its child when it is closed or collected, which
is the opposite of what a data plane that outlives meshd needs.

wireguard-go's output goes to a log file that root opens, so the file is
opened without following a symbolic link at its last component and the
default directory (/var/log/runmesh) is used only when nobody else can
write to it: otherwise another user could plant a link there and have root
create or append to any file on the host.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import stat
import time
from pathlib import Path

from .backend import NamedDevice, WireGuardError, check_interface_name
from .device import DeviceState, Operation
from .netconf import NetworkInterface
from .uapi import UapiClient, UapiError, socket_path_for

logger = logging.getLogger(__name__)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LOG_TAIL_BYTES = 2000
DEFAULT_LOG_DIR = Path("/var/log/runmesh")


class WireGuardGoError(WireGuardError):
    """wireguard-go could not be started or stopped."""


class UserspaceBackend(NamedDevice):
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
        log_dir: Path = DEFAULT_LOG_DIR,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.netns = netns
        self.wireguard_go = wireguard_go
        # An explicit log file; without one, wireguard-go-IFACE.log in log_dir.
        self.log_path = log_path
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self._interface: str | None = None
        self._addresses: list[str] = []
        self._mtu = 0
        self._pid: int | None = None  # set only for a process we spawned

    @property
    def pid(self) -> int | None:
        """The wireguard-go this backend spawned; None when it attached."""
        return self._pid

    async def start(self, interface: str, addresses: list[str], mtu: int) -> None:
        check_interface_name(interface)
        self._interface = interface
        # Checked before attaching too: a log directory that cannot be used
        # should stop `meshd up` now, not a restart of wireguard-go hours later.
        self._log_path()
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

    def _log_path(self) -> Path:
        if self.log_path is not None:
            return self.log_path
        _check_log_dir(self.log_dir)
        return self.log_dir / f"wireguard-go-{self.interface}.log"

    async def _spawn(self) -> None:
        log_path = self._log_path()
        log_fd = _open_log(log_path)
        try:
            log_start = os.fstat(log_fd).st_size
            # A stale socket from a killed wireguard-go is replaced by the new
            # one; wireguard-go only refuses a socket that still answers.
            pid = _spawn_detached(self._command(), log_fd)
        finally:
            os.close(log_fd)
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


def _check_log_dir(directory: Path) -> None:
    """Create `directory` (0700) if missing; refuse one others could write to."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise WireGuardGoError(
            f"cannot create the wireguard-go log directory {directory}: "
            f"{exc.strerror}; pass --wireguard-log PATH"
        ) from None
    info = directory.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise WireGuardGoError(
            f"{directory} is not a directory; pass --wireguard-log PATH"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise WireGuardGoError(
            f"refusing to log into {directory}: it is owned by uid "
            f"{info.st_uid}, not by root; fix it with `chown root {directory}`"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise WireGuardGoError(
            f"refusing to log into {directory}: it is writable by group or "
            f"others (mode {stat.S_IMODE(info.st_mode):o}); fix it with "
            f"`chmod 700 {directory}`"
        )


def _open_log(path: Path) -> int:
    """Open `path` to append to, never through a symbolic link, never a FIFO."""
    # O_NONBLOCK: opening a FIFO planted at the path fails at once instead of
    # hanging meshd; it changes nothing for a regular file.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise WireGuardGoError(
            f"cannot open the wireguard-go log {path}: {reason}"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise WireGuardGoError(
            f"refusing the wireguard-go log {path}: it is not a regular file "
            "owned by this user"
        )
    os.set_blocking(fd, True)
    return fd


def _spawn_detached(command: list[str], log_fd: int) -> int:
    env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
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
        fd = os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as log:
            log.seek(max(start, os.fstat(fd).st_size - LOG_TAIL_BYTES))
            text = log.read().decode(errors="replace").strip()
    except OSError as exc:
        return f"(log {log_path} unreadable: {exc.strerror})"
    return text or f"(nothing in {log_path})"

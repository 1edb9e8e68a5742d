"""The processes a benchmark runs and measures, apart from its nodes.

A coordinator (``runmesh-coordinator serve`` on a fresh SQLite database)
and a gateway, started from this virtual environment's scripts on loopback
ports; their CPU and memory read from ``/proc``; and the work directory of
one benchmark run, removed when it ends (also on SIGTERM). The nodes that
drive them are in ``bench.simfleet``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import placement

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before listening"
            )
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# How long a benchmark waits for a server it started to take a connection.
CONNECT_TIMEOUT = 30.0


async def connected(channel: Any, what: str) -> None:
    """Wait until ``channel`` is connected; RuntimeError naming ``what`` if
    it is not within CONNECT_TIMEOUT (a server that died mid-run must fail
    the run, not hang it: a call's own deadline starts only once the
    channel is ready)."""
    try:
        await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(
            f"{what} took no connection within {CONNECT_TIMEOUT:.0f} s"
        ) from None


def cpu_ms_exact(pid: int) -> float:
    """CPU time of every thread of a process so far, in ms, to the
    nanosecond (schedstat): a fan-out round takes tens of ms, below the
    10 ms resolution of ``cpu_seconds``. A thread that ended is not counted,
    so only differences over a short window mean anything."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(path.read_text().split()[0])
    return total / 1e6


def memory_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {}
    for line in status.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


class Coordinator:
    """``runmesh-coordinator serve`` on a fresh SQLite database."""

    FLAGS = [
        "--link-starts-per-minute",
        "1000000",  # the CLI caps it at 1,000,000
        "--failed-approvals-per-minute",
        "1000000",
        "--link-interval",
        "1",
    ]

    def __init__(
        self,
        workdir: Path,
        extra: Sequence[str],
        where: placement.Placement,
    ) -> None:
        self.workdir = workdir
        # Where this benchmark's servers and nodes run (restarts included).
        self.placement = where
        self.db_url = f"sqlite:///{workdir / 'x.db'}"
        self.port = free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    admin_key = ""

    def adopt(self, directory: Path) -> str:
        """Start from a saved fleet (see ``Fleet.save``); returns its admin key."""
        import shutil

        for suffix in ("", "-wal", "-shm"):
            source = directory / f"x.db{suffix}"
            if source.exists():
                shutil.copy(source, self.workdir / f"x.db{suffix}")
        self.admin_key = (directory / "admin_key").read_text().strip()
        return self.admin_key

    def create_key(self) -> str:
        done = subprocess.run(
            [
                str(BIN / "runmesh-coordinator"),
                "keys",
                "create",
                "--db",
                self.db_url,
                "--org",
                "bench",
                "--user",
                "admin@bench.test",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"keys create failed: {done.stderr}")
        self.admin_key = done.stdout.strip()
        return self.admin_key

    def start(self) -> float:
        """Start the server; returns time.time() just before it was launched."""
        self.starts += 1
        log = (self.workdir / f"coordinator-{self.starts}.log").open("ab")
        argv = [
            str(BIN / "runmesh-coordinator"),
            "--log-level",
            "warning",
            "serve",
            "--db",
            self.db_url,
            "--listen",
            self.target,
            *self.FLAGS,
            *self.extra,
        ]
        launched = time.time()
        with placement.starting_on(self.placement.servers):
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for_port(self.port, 60, self.proc)
        except RuntimeError as exc:
            # Its own words say why (a refused flag, a locked database).
            raise RuntimeError(f"coordinator: {exc}:\n{self.log_tail(10)}") from None
        return launched

    def check_running(self) -> None:
        """RuntimeError, with its last log lines, if the server has exited."""
        if self.proc is not None and (code := self.proc.poll()) is not None:
            tail = self.log_tail(10)
            said = f":\n{tail}" if tail.strip() else ", its log empty"
            raise RuntimeError(f"the coordinator exited (code {code}){said}")

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Around calls to the coordinator: if one fails because the
        coordinator died, say that, not how the call broke."""
        try:
            yield
        except Exception:
            if self.proc is not None:  # a dying process may not be reaped yet
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=1)
            self.check_running()
            raise

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"coordinator-{self.starts}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Gateway:
    def __init__(
        self, workdir: Path, coordinator: str, cpus: frozenset[int] = frozenset()
    ) -> None:
        self.port = free_port()
        log = (workdir / "gateway.log").open("ab")
        with placement.starting_on(cpus):
            self.proc = self._start(log, coordinator)
        try:
            wait_for_port(self.port, 60, self.proc)
        except BaseException:
            self.stop()  # nobody else holds it yet (an interrupt, a failed start)
            raise

    def _start(self, log: Any, coordinator: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(BIN / "runmesh-gateway"),
                "serve",
                "--coordinator",
                coordinator,
                "--listen",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# The signal a run was interrupted by and that has not ended it yet.
_interrupted_by: int | None = None


def _on_signal(signum: int, frame: Any) -> None:
    global _interrupted_by
    _interrupted_by = signum
    raise KeyboardInterrupt(f"signal {signum}")


def check_interrupted() -> None:
    """Raise the interrupt again if it was swallowed: one that lands in a
    finaliser (grpc's channel clean-up joins a thread there) is printed and
    ignored, and the run went on to its end. Called between steps."""
    if _interrupted_by is not None:
        raise KeyboardInterrupt(f"signal {_interrupted_by}")


@contextlib.contextmanager
def bench_run(prefix: str, keep: bool = False) -> Iterator[contextlib.ExitStack]:
    """A work directory and a clean-up stack, unwound also on Ctrl-C/SIGTERM."""
    global _interrupted_by
    previous = {
        signum: signal.signal(signum, _on_signal)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    # An interrupt swallowed by a finaliser is raised again by
    # check_interrupted(); it needs no traceback of its own meanwhile.
    default_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            default_hook(info)

    sys.unraisablehook = unraisable
    failure: BaseException | None = None
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix=f"runmesh-{prefix}-"))
        if not keep:
            stack.callback(_remove_tree, workdir)
        stack.enter_context(contextlib.nullcontext())
        stack.workdir = workdir  # type: ignore[attr-defined]
        try:
            yield stack
        except (Exception, KeyboardInterrupt) as exc:
            failure = exc
        finally:
            # The clean-up below must run to its end: no second interrupt.
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
            _interrupted_by = None
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    sys.unraisablehook = default_hook
    # Everything the run started is stopped by now; say why it ended in
    # words, not with a traceback.
    if isinstance(failure, KeyboardInterrupt):
        why = f" ({failure})" if str(failure) else ""
        print(
            f"bench.{prefix}: interrupted{why}; stopped what it started",
            file=sys.stderr,
        )
        raise SystemExit(130)
    if failure is not None:
        kept = (
            f" (its work directory, with the logs: {workdir})"
            if keep
            else (" (--keep keeps the work directory and its logs)")
        )
        print(f"bench.{prefix}: failed: {_said(failure)}{kept}", file=sys.stderr)
        raise SystemExit(1)


def _said(exc: BaseException) -> str:
    """What went wrong, in one line where it can be: a failed gRPC call as
    its status and details, anything else as its message."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"a call failed: {code().name}: {details()}"
    return str(exc) or type(exc).__name__


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])

"""Real coordinator and gateway processes for tests, on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before listening"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(
    argv: Sequence[str],
    host: str,
    port: int,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> Service:
    log = log_path.open("ab")
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    service = Service(proc, host, port, log_path)
    try:
        wait_for_port(host, port, 20, proc)
    except Exception:
        service.stop(signal.SIGKILL)
        raise RuntimeError(f"{argv[0]} did not start:\n{service.log()}") from None
    return service


@dataclass
class Coordinator(Service):
    db_url: str = ""
    extra: list[str] = field(default_factory=list)


def start_coordinator(
    workdir: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    db_url: str | None = None,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Coordinator:
    port = port or free_port()
    db_url = db_url or f"sqlite:///{workdir / 'coordinator.db'}"
    argv = [
        str(BIN / "runmesh-coordinator"),
        "serve",
        "--db",
        db_url,
        "--listen",
        f"{host}:{port}",
        "--link-interval",
        "1",
        # Suites link hundreds of devices from one address; the limit itself
        # is tested with its default in the rate-limit tests.
        "--link-starts-per-minute",
        "100000",
        *extra,
    ]
    service = start(argv, host, port, workdir / f"coordinator-{port}.log", env)
    return Coordinator(service.proc, host, port, service.log_path, db_url, list(extra))


def create_key(
    db_url: str,
    org: str = "acme",
    user: str = "admin@acme.test",
    role: str = "admin",
    scopes: str = "*",
) -> str:
    done = subprocess.run(
        [
            str(BIN / "runmesh-coordinator"),
            "keys",
            "create",
            "--db",
            db_url,
            "--org",
            org,
            "--user",
            user,
            "--role",
            role,
            "--scopes",
            scopes,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"keys create failed: {done.stderr}")
    return done.stdout.strip()


def start_gateway(workdir: Path, coordinator: str, port: int | None = None) -> Service:
    port = port or free_port()
    argv = [
        str(BIN / "runmesh-gateway"),
        "serve",
        "--coordinator",
        coordinator,
        "--listen",
        f"127.0.0.1:{port}",
    ]
    return start(argv, "127.0.0.1", port, workdir / f"gateway-{port}.log")


def gateway_client(gateway: Service, key: str | None = None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(
        base_url=f"http://{gateway.target}/v1/runmesh", headers=headers, timeout=15
    )

"""``runmesh-gateway serve`` as a real process, with whatever flags a test needs.

``support.processes.start_gateway`` takes no flags; this one does, and knows
whether the gateway serves HTTPS.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from support.processes import BIN, Service, free_port, start


@dataclass
class Gateway:
    service: Service
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.service.target}"

    def client(self, verify: ssl.SSLContext | bool = True) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=verify, timeout=15)

    def log_lines(self) -> list[str]:
        return self.service.log().splitlines()

    def json_log(self) -> list[dict[str, Any]]:
        """The log's JSON objects; uvicorn's own lines are JSON too."""
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]

    def stop(self) -> None:
        self.service.stop()


def start_gateway(
    workdir: Path, coordinator: str, extra: Sequence[str] = (), tls: bool = False
) -> Gateway:
    port = free_port()
    argv = [
        str(BIN / "runmesh-gateway"),
        "serve",
        "--coordinator",
        coordinator,
        "--listen",
        f"127.0.0.1:{port}",
        *extra,
    ]
    log_path = workdir / f"gateway-{port}.log"
    service = start(argv, "127.0.0.1", port, log_path)
    return Gateway(service, "https" if tls else "http")


def trusting(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only ``ca``."""
    return ssl.create_default_context(cafile=str(ca))

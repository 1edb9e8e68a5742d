"""What `meshd up` is doing, written down for `meshd status` to read.

`meshd up` keeps DIR/status.json current (written atomically on every
change): the stream's state, the coordinator it talks to, the mesh version,
the last error, WireGuard operations applied and reconnects. `meshd status`
puts that next to the identity and what the WireGuard device itself reports
right now (handshakes, bytes): the device is only read, never changed.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from meshd.state import Identity, SavedMap, StateDir
from meshd.wireguard.backend import WireGuardError
from meshd.wireguard.device import DeviceState


class StreamState(enum.StrEnum):
    # opening a stream to a coordinator, or waiting for its first map
    CONNECTING = "connecting"
    # the stream is up and the node has applied its map
    CONNECTED = "connected"
    # the last attempt failed; waiting before the next one
    BACKOFF = "backoff"
    # the coordinator revoked the node; meshd has exited
    REVOKED = "revoked"
    # meshd up has exited for another reason
    STOPPED = "stopped"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class NodeStatus:
    interface: str
    backend: str
    listen_port: int
    pid: int
    state: StreamState = StreamState.CONNECTING
    coordinator: str | None = None
    version: int = 0
    # "full_map" or "resume": how the coordinator opened the current stream.
    first_message: str | None = None
    last_error: str | None = None
    operations_applied: int = 0
    reconnects: int = 0
    last_connected_at: str | None = None
    endpoints: list[str] = field(default_factory=list)
    updated_at: str = ""


class StatusWriter:
    """Holds the status and writes it whenever a field really changes."""

    def __init__(self, state: StateDir, status: NodeStatus) -> None:
        self._state = state
        self.status = status
        self._written: dict[str, Any] | None = None

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            if not hasattr(self.status, name):
                raise AttributeError(f"NodeStatus has no field {name}")
            setattr(self.status, name, value)
        current = asdict(self.status)
        current.pop("updated_at")
        if current == self._written:
            return
        self._written = current
        self.status.updated_at = utc_now()
        self._state.save_status(asdict(self.status))


class DeviceReader(Protocol):
    """A backend adopted for one interface; `read` changes nothing (a UAPI
    `get`, a netlink dump)."""

    @property
    def interface(self) -> str: ...

    async def read(self) -> DeviceState: ...


async def build_report(
    identity: Identity,
    saved: SavedMap | None,
    stream: dict[str, Any] | None,
    reader: DeviceReader,
) -> dict[str, Any]:
    """Everything `meshd status` shows, as one JSON-ready value."""
    interface = reader.interface
    device: DeviceState | None = None
    device_error = None
    try:
        device = await reader.read()
    except WireGuardError as exc:
        device_error = str(exc)
    version = saved.version if saved else 0
    if stream and isinstance(stream.get("version"), int):
        version = max(version, stream["version"])
    return {
        "node": asdict(identity),
        "stream": stream,
        "version": version,
        "interface": interface,
        "device": {
            "reachable": device is not None,
            "error": device_error,
            "listenPort": device.listen_port if device else None,
        },
        "peers": _peers(saved, device),
    }


def _peers(saved: SavedMap | None, device: DeviceState | None) -> list[dict[str, Any]]:
    known = saved.peers if saved else {}
    live = device.peers if device else {}
    now = time.time()
    rows = []
    for key in sorted(known.keys() | live.keys(), key=lambda k: _name(known, k)):
        wire = known.get(key, {})
        peer = live.get(key)
        handshake = peer.latest_handshake if peer else 0
        rows.append(
            {
                "name": _name(known, key),
                "nodeId": wire.get("nodeId"),
                "publicKey": key,
                "inMap": key in known,
                "onDevice": peer is not None,
                "endpoint": peer.config.endpoint if peer else None,
                "allowedIps": list(peer.config.allowed_ips)
                if peer
                else list(wire.get("allowedIps", [])),
                "persistentKeepalive": peer.config.persistent_keepalive
                if peer
                else None,
                "latestHandshake": _iso(handshake) if handshake else None,
                "handshakeAgeSeconds": int(now - handshake) if handshake else None,
                "rxBytes": peer.rx_bytes if peer else None,
                "txBytes": peer.tx_bytes if peer else None,
            }
        )
    return rows


def _name(known: dict[str, dict[str, Any]], key: str) -> str:
    return str(known.get(key, {}).get("name") or "?")


def _iso(unix: int) -> str:
    moment = datetime.fromtimestamp(unix, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def render(report: dict[str, Any]) -> list[str]:
    """The report as the lines `meshd status` prints."""
    node = report["node"]
    lines = [
        f"node     {node['name']} ({node['node_id']})",
        f"address  {node['ipv4']} {node['ipv6']}",
        f"stream   {_stream_line(report['stream'])}",
        f"version  {report['version']}",
        f"device   {_device_line(report)}",
    ]
    table = [["PEER", "PUBLIC KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX", "TX"]]
    for peer in report["peers"]:
        table.append(
            [
                peer["name"] if peer["inMap"] else f"{peer['name']} (not in map)",
                peer["publicKey"],
                peer["endpoint"] or "-",
                ",".join(peer["allowedIps"]) or "-",
                _handshake(peer),
                _bytes(peer["rxBytes"]),
                _bytes(peer["txBytes"]),
            ]
        )
    if len(table) > 1:
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.append("")
        lines += [
            "  ".join(
                cell.ljust(w) for cell, w in zip(row, widths, strict=True)
            ).rstrip()
            for row in table
        ]
    return lines


def _stream_line(stream: dict[str, Any] | None) -> str:
    if not stream:
        return "unknown (no status.json: is `meshd up` running?)"
    parts = [str(stream.get("state", "unknown"))]
    if stream.get("coordinator"):
        parts.append(f"to {stream['coordinator']}")
    if stream.get("last_connected_at"):
        parts.append(f"last connected {stream['last_connected_at']}")
    parts.append(f"reconnects {stream.get('reconnects', 0)}")
    if stream.get("first_message"):
        parts.append(f"opened with {stream['first_message']}")
    if stream.get("last_error"):
        parts.append(f"last error: {stream['last_error']}")
    return ", ".join(parts)


def _device_line(report: dict[str, Any]) -> str:
    stream = report["stream"] or {}
    backend = stream.get("backend", "userspace")
    text = f"{report['interface']} ({backend})"
    if "operations_applied" in stream:
        text += f", {stream['operations_applied']} WireGuard operations applied"
    device = report["device"]
    if not device["reachable"]:
        text += f", not readable: {device['error']}"
    else:
        text += f", listening on {device['listenPort']}"
    return text


def _handshake(peer: dict[str, Any]) -> str:
    if not peer["onDevice"]:
        return "not on device"
    age = peer["handshakeAgeSeconds"]
    if age is None:
        return "never"
    if age < 120:
        return f"{age}s ago"
    if age < 7200:
        return f"{age // 60}m ago"
    return f"{age // 3600}h ago"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"

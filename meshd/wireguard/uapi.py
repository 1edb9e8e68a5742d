"""A client for the cross-platform UAPI that wireguard-go serves on a unix socket.

One request per connection: `get=1` answers `key=value` lines, `set=1` takes
them; both end with `errno=N` and a blank line. Keys travel as lowercase
hex. Things wireguard-go does that shape this module:

- errno is negative (`errno=-22`); anything but 0 is a refusal.
- A refused `set` is not atomic: lines before the bad one have been
  applied. Callers read the device again before replanning.
- An unknown operation gets no answer; the connection just closes.
- `update_only=true` on a peer that does not exist silently does nothing.
"""

from __future__ import annotations

import asyncio
import errno as errno_codes
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import assert_never

from runmesh.wgkey import InvalidKey, hex_to_key, key_to_hex

from .backend import WireGuardError
from .device import (
    AddPeer,
    DeviceState,
    Operation,
    PeerConfig,
    PeerState,
    RemovePeer,
    SetInterface,
    UpdatePeer,
)

SOCKET_DIR = Path("/var/run/wireguard")
DEFAULT_TIMEOUT = 5.0


def socket_path_for(interface: str) -> Path:
    """Where wireguard-go listens for `interface`.

    The directory belongs to the mount namespace, not the network one, so
    two devices with one name in two network namespaces share one path.
    """
    return SOCKET_DIR / f"{interface}.sock"


class UapiError(WireGuardError):
    """The socket could not be reached, or wireguard-go refused a request."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno  # as wireguard-go sent it (negative), None if unsent


class UapiClient:
    def __init__(
        self, socket_path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    async def get(self) -> DeviceState:
        lines = await self._exchange("get", ["get=1"])
        return parse_device(lines)

    async def set(self, lines: Sequence[str]) -> None:
        """Send one `set` transaction of raw `key=value` lines."""
        for line in lines:
            if "\n" in line or "=" not in line:
                raise ValueError(f"UAPI line {line!r} is not one key=value line")
        await self._exchange("set", ["set=1", *lines])

    async def apply(self, ops: Sequence[Operation]) -> None:
        """Apply `ops` in one transaction; every key is checked before sending."""
        if ops:
            await self.set(encode_operations(ops))

    async def answers(self) -> bool:
        """Whether a live wireguard-go is behind the socket."""
        try:
            await self.get()
        except UapiError:
            return False
        return True

    async def server_pid(self) -> int:
        """The pid of the process serving the socket, from the kernel's credentials.

        This is how a meshd that attached to a wireguard-go it did not start
        can still stop it.
        """
        reader, writer = await self._connect()
        try:
            sock = writer.get_extra_info("socket")
            creds = sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
            )
            pid: int = struct.unpack("3i", creds)[0]
            return pid
        finally:
            writer.close()
            await _closed(writer)

    async def _exchange(self, verb: str, request: list[str]) -> list[str]:
        payload = "".join(f"{line}\n" for line in request) + "\n"
        try:
            async with asyncio.timeout(self.timeout):
                return await self._round_trip(verb, payload.encode())
        except TimeoutError:
            raise UapiError(
                f"wireguard-go at {self.socket_path} did not answer {verb} "
                f"within {self.timeout:g}s"
            ) from None

    async def _round_trip(self, verb: str, payload: bytes) -> list[str]:
        reader, writer = await self._connect()
        try:
            writer.write(payload)
            await writer.drain()
            lines = await _read_answer(reader)
        except ConnectionError as exc:
            raise UapiError(
                f"wireguard-go at {self.socket_path} dropped the connection "
                f"during {verb}: {exc}"
            ) from exc
        finally:
            writer.close()
            await _closed(writer)

        if lines is None:
            # wireguard-go closes without a word on an operation it does not
            # know, and when it is shutting down.
            raise UapiError(
                f"wireguard-go at {self.socket_path} closed the connection "
                f"without answering {verb}"
            )
        _raise_for_errno(verb, lines.pop() if lines else "")
        return lines

    async def _connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise UapiError(
                f"no UAPI socket answering at {self.socket_path}: wireguard-go "
                f"is not running for this interface ({exc.strerror})"
            ) from exc
        except PermissionError as exc:
            raise UapiError(
                f"permission denied on {self.socket_path}: UAPI needs root "
                "(or the user wireguard-go runs as)"
            ) from exc


async def _read_answer(reader: asyncio.StreamReader) -> list[str] | None:
    """Lines up to the blank line that ends an answer; None if the peer hung up."""
    lines: list[str] = []
    while True:
        raw = await reader.readline()
        if not raw.endswith(b"\n"):
            return None
        line = raw.decode().rstrip("\n")
        if not line:
            return lines
        lines.append(line)


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


def _raise_for_errno(verb: str, line: str) -> None:
    key, _, value = line.partition("=")
    if key != "errno" or not value.lstrip("-").isdigit():
        raise UapiError(f"wireguard-go answered {verb} without an errno: {line!r}")
    code = int(value)
    if code == 0:
        return
    raise UapiError(
        f"wireguard-go refused {verb}: errno={code} ({_describe_errno(code)}); "
        "its log names the line it refused",
        errno=code,
    )


def _describe_errno(code: int) -> str:
    name = errno_codes.errorcode.get(abs(code), "unknown")
    return f"{name}: {os.strerror(abs(code))}"


def encode_operations(ops: Iterable[Operation]) -> list[str]:
    """`set` lines for `ops`; raises InvalidKey naming the field of a bad key.

    UAPI wants interface lines before the first peer, so interface changes
    are hoisted whatever their place in `ops`; peer operations keep order.
    """
    interface: list[str] = []
    peers: list[str] = []
    for index, op in enumerate(ops):
        where = f"operation {index} ({type(op).__name__})"
        if isinstance(op, SetInterface):
            interface += _interface_lines(op, where)
        elif isinstance(op, AddPeer):
            peers += _add_peer_lines(op.config, where)
        elif isinstance(op, UpdatePeer):
            peers += _update_peer_lines(op, where)
        elif isinstance(op, RemovePeer):
            peers += [f"public_key={_hex(op.public_key, where, 'public_key')}"]
            peers += ["remove=true"]
        else:
            assert_never(op)
    return interface + peers


def _interface_lines(op: SetInterface, where: str) -> list[str]:
    lines = []
    if op.private_key is not None:
        lines.append(
            f"private_key={_hex(op.private_key, where, 'private_key', secret=True)}"
        )
    if op.listen_port is not None:
        if not 0 <= op.listen_port < 65536:
            raise ValueError(f"{where}: listen_port {op.listen_port} is not 0..65535")
        lines.append(f"listen_port={op.listen_port}")
    return lines


def _add_peer_lines(config: PeerConfig, where: str) -> list[str]:
    # replace_allowed_ips makes an add of a peer that already exists (a
    # race with another writer) end in exactly the configuration asked for.
    lines = [
        f"public_key={_hex(config.public_key, where, 'public_key')}",
        "replace_allowed_ips=true",
        *(f"allowed_ip={cidr}" for cidr in config.allowed_ips),
        f"persistent_keepalive_interval={config.persistent_keepalive}",
    ]
    if config.endpoint is not None:
        lines.append(f"endpoint={config.endpoint}")
    return lines


def _update_peer_lines(op: UpdatePeer, where: str) -> list[str]:
    # update_only: a peer removed meanwhile stays removed instead of coming
    # back half-configured.
    lines = [f"public_key={_hex(op.public_key, where, 'public_key')}"]
    lines.append("update_only=true")
    if op.allowed_ips is not None:
        lines.append("replace_allowed_ips=true")
        lines += [f"allowed_ip={cidr}" for cidr in op.allowed_ips]
    if op.endpoint is not None:
        lines.append(f"endpoint={op.endpoint}")
    if op.persistent_keepalive is not None:
        lines.append(f"persistent_keepalive_interval={op.persistent_keepalive}")
    return lines


def _hex(key: str, where: str, field: str, secret: bool = False) -> str:
    try:
        return key_to_hex(key)
    except InvalidKey as exc:
        shown = "(value withheld)" if secret else repr(key)
        raise InvalidKey(f"{where}: {field} {shown} {exc}") from None


def parse_device(lines: Iterable[str]) -> DeviceState:
    """A DeviceState from the lines of a `get` answer (without the errno line).

    Keys this module does not use (preshared_key, fwmark, protocol_version,
    nanoseconds) are skipped, so a newer wireguard-go does not break us.
    """
    private_key: str | None = None
    listen_port = 0
    peers: dict[str, PeerState] = {}
    peer: dict[str, list[str]] | None = None
    for line in lines:
        key, _, value = line.partition("=")
        if key == "public_key":
            if peer is not None:
                _store_peer(peers, peer)
            peer = {"public_key": [value]}
        elif peer is not None:
            peer.setdefault(key, []).append(value)
        elif key == "private_key":
            private_key = hex_to_key(value)
        elif key == "listen_port":
            listen_port = int(value)
    if peer is not None:
        _store_peer(peers, peer)
    return DeviceState(private_key=private_key, listen_port=listen_port, peers=peers)


def _store_peer(peers: dict[str, PeerState], fields: dict[str, list[str]]) -> None:
    def last(key: str, default: str) -> str:
        return fields.get(key, [default])[-1]

    public_key = hex_to_key(fields["public_key"][0])
    config = PeerConfig(
        public_key=public_key,
        allowed_ips=tuple(fields.get("allowed_ip", [])),
        endpoint=fields["endpoint"][-1] if "endpoint" in fields else None,
        persistent_keepalive=int(last("persistent_keepalive_interval", "0")),
    )
    peers[public_key] = PeerState(
        config=config,
        latest_handshake=int(last("last_handshake_time_sec", "0")),
        rx_bytes=int(last("rx_bytes", "0")),
        tx_bytes=int(last("tx_bytes", "0")),
    )

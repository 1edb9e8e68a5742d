"""WireGuard in the Linux kernel: the link over rtnetlink, the device over genl.

The link (`ip link add NAME type wireguard`) is made with pyroute2's IPRoute
and configured through `netconf`; keys, the port and peers travel over the
"wireguard" generic-netlink family with pyroute2's WireGuard client. Both
are synchronous and bound to the thread that opened them, so every call
opens its socket in a worker thread and closes it there.

The translation is kept apart from the I/O so it can be tested without a
kernel module:

- `encode_operations` turns operations into `DeviceRequest`s, the keyword
  arguments of `WireGuard.set`; pyroute2 sends one peer per message, so a
  request carries at most one peer.
- `parse_dump` turns the messages of a device dump into a `DeviceState`.
  The kernel splits a large device over several messages: the interface's
  own attributes come only in the first, and a peer whose allowed IPs did
  not fit is repeated at the start of the next message with its public key
  and the rest of its allowed IPs only. Peers are therefore merged by
  public key, never replaced.

Keys travel as base64 text both ways: pyroute2 decodes base64 into the raw
32 bytes of the attribute on the way out, and hands back base64 `bytes` on
the way in.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Required, TypedDict, assert_never, cast

from pyroute2 import IPRoute, WireGuard
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from runmesh.wgkey import InvalidKey, decode_key

from .backend import NamedDevice, WireGuardError, check_interface_name
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
from .netconf import NetworkInterface

logger = logging.getLogger(__name__)

AF_INET = 2
AF_INET6 = 10
LINK_KIND = "wireguard"
MISSING_MODULE = "no WireGuard kernel module"


class KernelDeviceError(WireGuardError):
    """The kernel refused a request about the WireGuard link or device."""


class KernelModuleMissing(KernelDeviceError):
    """This kernel cannot create WireGuard links."""


class NetlinkAttributes(Protocol):
    """What we read of a pyroute2 message or nested attribute."""

    def get_attr(self, attr: str, default: Any = None) -> Any: ...


class PeerRequest(TypedDict, total=False):
    """One peer as pyroute2's `WireGuard.set(peer=...)` takes it.

    A key left out is an attribute not sent: without `allowed_ips` and
    `replace_allowed_ips` the kernel leaves a peer's allowed IPs alone.
    """

    public_key: Required[str]  # base64
    remove: bool  # WGPEER_F_REMOVE_ME
    update_only: bool  # WGPEER_F_UPDATE_ONLY
    replace_allowed_ips: bool  # WGPEER_F_REPLACE_ALLOWEDIPS
    allowed_ips: list[str]  # WGPEER_A_ALLOWEDIPS
    endpoint_addr: str  # WGPEER_A_ENDPOINT, without brackets
    endpoint_port: int
    persistent_keepalive: int  # 0 turns it off, so 0 is sent too


@dataclass(frozen=True)
class DeviceRequest:
    """One WG_CMD_SET_DEVICE message: the arguments of `WireGuard.set`."""

    private_key: str | None = None
    listen_port: int | None = None
    peer: PeerRequest | None = None


def encode_operations(ops: Iterable[Operation]) -> list[DeviceRequest]:
    """Requests for `ops`, in order; raises InvalidKey naming a bad key's field.

    Every key is checked before anything is sent, so a bad key in the last
    operation does not leave the first ones applied.
    """
    requests: list[DeviceRequest] = []
    for index, op in enumerate(ops):
        where = f"operation {index} ({type(op).__name__})"
        if isinstance(op, SetInterface):
            request = _interface_request(op, where)
            if request is not None:
                requests.append(request)
        elif isinstance(op, AddPeer):
            requests.append(DeviceRequest(peer=_add_peer(op.config, where)))
        elif isinstance(op, UpdatePeer):
            requests.append(DeviceRequest(peer=_update_peer(op, where)))
        elif isinstance(op, RemovePeer):
            key = _checked_key(op.public_key, where, "public_key")
            requests.append(DeviceRequest(peer={"public_key": key, "remove": True}))
        else:
            assert_never(op)
    return requests


def _interface_request(op: SetInterface, where: str) -> DeviceRequest | None:
    if op.private_key is None and op.listen_port is None:
        return None
    if op.private_key is not None:
        _checked_key(op.private_key, where, "private_key", secret=True)
    if op.listen_port is not None and not 0 <= op.listen_port < 65536:
        raise ValueError(f"{where}: listen_port {op.listen_port} is not 0..65535")
    return DeviceRequest(private_key=op.private_key, listen_port=op.listen_port)


def _add_peer(config: PeerConfig, where: str) -> PeerRequest:
    # Replacing allowed IPs makes an add of a peer that already exists (a
    # race with another writer) end in exactly the configuration asked for.
    peer: PeerRequest = {
        "public_key": _checked_key(config.public_key, where, "public_key"),
        "replace_allowed_ips": True,
        "allowed_ips": list(config.allowed_ips),
        "persistent_keepalive": config.persistent_keepalive,
    }
    if config.endpoint is not None:
        _set_endpoint(peer, config.endpoint)
    return peer


def _update_peer(op: UpdatePeer, where: str) -> PeerRequest:
    # update_only: a peer removed meanwhile stays removed instead of coming
    # back half-configured.
    peer: PeerRequest = {
        "public_key": _checked_key(op.public_key, where, "public_key"),
        "update_only": True,
    }
    if op.allowed_ips is not None:
        peer["replace_allowed_ips"] = True
        peer["allowed_ips"] = list(op.allowed_ips)
    if op.endpoint is not None:
        _set_endpoint(peer, op.endpoint)
    if op.persistent_keepalive is not None:
        peer["persistent_keepalive"] = op.persistent_keepalive
    return peer


def _set_endpoint(peer: PeerRequest, endpoint: str) -> None:
    # Endpoints are normalised already: "ip:port" or "[ip6]:port".
    host, _, port = endpoint.rpartition(":")
    peer["endpoint_addr"] = host.removeprefix("[").removesuffix("]")
    peer["endpoint_port"] = int(port)


def _checked_key(key: str, where: str, field: str, secret: bool = False) -> str:
    try:
        decode_key(key)
    except InvalidKey as exc:
        shown = "(value withheld)" if secret else repr(key)
        raise InvalidKey(f"{where}: {field} {shown} {exc}") from None
    return key


@dataclass
class _PeerParts:
    """A peer gathered from the parts of a dump that mention it."""

    public_key: str
    allowed_ips: list[str] = field(default_factory=list)
    endpoint: str | None = None
    persistent_keepalive: int = 0
    latest_handshake: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0

    def state(self) -> PeerState:
        config = PeerConfig(
            public_key=self.public_key,
            allowed_ips=tuple(self.allowed_ips),
            endpoint=self.endpoint,
            persistent_keepalive=self.persistent_keepalive,
        )
        return PeerState(config, self.latest_handshake, self.rx_bytes, self.tx_bytes)


def parse_dump(messages: Iterable[NetlinkAttributes]) -> DeviceState:
    """The DeviceState in every message of a WG_CMD_GET_DEVICE dump, merged."""
    private_key: str | None = None
    listen_port = 0
    peers: dict[str, _PeerParts] = {}
    for message in messages:
        key = message.get_attr("WGDEVICE_A_PRIVATE_KEY")
        if key is not None:
            private_key = _key_text(key)
        port = message.get_attr("WGDEVICE_A_LISTEN_PORT")
        if port is not None:
            listen_port = int(port)
        for peer in message.get_attr("WGDEVICE_A_PEERS") or []:
            _merge_peer(peers, peer)

    return DeviceState(
        private_key=private_key,
        listen_port=listen_port,
        peers={key: parts.state() for key, parts in peers.items()},
    )


def _merge_peer(peers: dict[str, _PeerParts], peer: NetlinkAttributes) -> None:
    # A continuation carries only the public key and more allowed IPs, so
    # an attribute that is absent keeps what an earlier part said.
    public_key = _key_text(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
    parts = peers.setdefault(public_key, _PeerParts(public_key))
    for allowed_ip in peer.get_attr("WGPEER_A_ALLOWEDIPS") or []:
        parts.allowed_ips.append(_allowed_ip_text(allowed_ip))
    endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
    if endpoint is not None:
        parts.endpoint = _endpoint_text(endpoint)
    keepalive = peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
    if keepalive is not None:
        parts.persistent_keepalive = int(keepalive)
    handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    if handshake is not None:
        parts.latest_handshake = int(handshake["tv_sec"])
    for name, counter in (("rx_bytes", "RX_BYTES"), ("tx_bytes", "TX_BYTES")):
        value = peer.get_attr(f"WGPEER_A_{counter}")
        if value is not None:
            setattr(parts, name, int(value))


def _key_text(value: bytes | str) -> str:
    # pyroute2 hands keys back as base64 bytes.
    return value.decode("ascii") if isinstance(value, bytes) else value


def _endpoint_text(endpoint: dict[str, Any]) -> str | None:
    family, addr, port = endpoint.get("family"), endpoint["addr"], endpoint["port"]
    if family == AF_INET:
        return f"{addr}:{port}"
    if family == AF_INET6:
        return f"[{addr}]:{port}"
    return None


def _allowed_ip_text(allowed_ip: dict[str, Any]) -> str:
    # pyroute2 spells the decoded family, address and mask as "addr";
    # PeerConfig normalises it.
    return cast(str, allowed_ip["addr"])


class KernelBackend(NamedDevice):
    """A WireGuardBackend over the kernel's WireGuard.

    `netns` keeps the link in a named network namespace (tests, and hosts
    that keep the mesh in one); meshd normally leaves it None. Unlike
    wireguard-go there is no process to keep alive: `close()` leaves the
    link configured, and the kernel keeps forwarding without meshd.
    """

    def __init__(self, *, netns: str | None = None) -> None:
        self.netns = netns
        self._interface: str | None = None

    async def start(self, interface: str, addresses: list[str], mtu: int) -> None:
        check_interface_name(interface)
        self._interface = interface
        created = await asyncio.to_thread(self._create_link)
        logger.info(
            "%s kernel WireGuard interface=%s",
            "created" if created else "attached to",
            interface,
        )

        link = NetworkInterface(interface, netns=self.netns)
        await link.set_mtu(mtu)
        await link.set_addresses(addresses)
        await link.up()

    async def read(self) -> DeviceState:
        return parse_dump(await asyncio.to_thread(self._dump))

    async def apply(self, ops: list[Operation]) -> None:
        requests = encode_operations(ops)
        if requests:
            await asyncio.to_thread(self._send, requests)

    async def remove(self) -> None:
        await NetworkInterface(self.interface, netns=self.netns).delete()
        logger.info("removed kernel WireGuard interface=%s", self.interface)

    async def close(self) -> None:
        if self._interface is not None:
            logger.info("leaving kernel WireGuard interface=%s", self._interface)

    def _create_link(self) -> bool:
        """Create the link, or check the existing one is WireGuard; True if made."""
        try:
            with IPRoute(netns=self.netns) as ipr:
                found = ipr.link_lookup(ifname=self.interface)
                if found:
                    self._check_kind(ipr, cast(int, found[0]))
                    return False
                ipr.link("add", ifname=self.interface, kind=LINK_KIND)
                return True
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False  # another writer made it meanwhile
            if exc.code == errno.EOPNOTSUPP:
                raise KernelModuleMissing(_missing_module_message(exc)) from exc
            raise KernelDeviceError(
                f"could not create WireGuard interface {self.interface}: {exc}"
            ) from exc

    def _check_kind(self, ipr: IPRoute, index: int) -> None:
        link = ipr.get_links(index)[0]
        kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
        if kind != LINK_KIND:
            raise KernelDeviceError(
                f"interface {self.interface} exists but is a {kind or 'plain'} "
                "link, not a kernel WireGuard one; remove it or pick another name"
            )

    def _dump(self) -> list[NetlinkAttributes]:
        with self._genl() as wg:
            try:
                return list(wg.info(self.interface))
            except NetlinkError as exc:
                raise KernelDeviceError(
                    f"could not read WireGuard device {self.interface}: {exc}"
                ) from exc

    def _send(self, requests: Sequence[DeviceRequest]) -> None:
        with self._genl() as wg:
            for request in requests:
                try:
                    wg.set(
                        self.interface,
                        private_key=request.private_key,
                        listen_port=request.listen_port,
                        peer=request.peer,
                    )
                except NetlinkError as exc:
                    raise KernelDeviceError(
                        f"WireGuard device {self.interface} refused "
                        f"{_describe(request)}: {exc}"
                    ) from exc

    def _genl(self) -> WireGuard:
        try:
            return WireGuard(netns=self.netns)
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                raise KernelModuleMissing(_missing_module_message(exc)) from exc
            raise KernelDeviceError(
                f"could not open the WireGuard netlink family: {exc}"
            ) from exc


def _describe(request: DeviceRequest) -> str:
    # Never the private key itself.
    if request.peer is None:
        return "the interface settings"
    return f"the change to peer {request.peer['public_key']}"


def _missing_module_message(exc: NetlinkError) -> str:
    return (
        f"{MISSING_MODULE}: the kernel cannot create {LINK_KIND} links "
        f"({_errno_text(exc.code)}); load it with `modprobe wireguard` or "
        "use --backend userspace"
    )


def _errno_text(code: int) -> str:
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"


def kernel_available() -> tuple[bool, str]:
    """Whether this kernel can run WireGuard, and why not when it cannot.

    The probe creates a wireguard link in a throwaway network namespace:
    that loads the module if it is installed but not yet loaded, which a
    look-up of the generic-netlink family would not, and it touches no
    interface of the host.
    """
    if sys.platform != "linux":
        return False, f"{MISSING_MODULE}: {sys.platform} is not Linux"
    try:
        _probe_link()
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            return False, (
                f"{MISSING_MODULE}: this kernel does not know link type "
                f"{LINK_KIND!r} ({_errno_text(exc.code)})"
            )
        return False, (
            f"{MISSING_MODULE}: creating a probe link failed ({_errno_text(exc.code)})"
        )
    except OSError as exc:
        # Creating a namespace needs CAP_SYS_ADMIN; without it we cannot tell.
        return False, f"{MISSING_MODULE}: could not probe for it: {exc}"
    return True, f"the kernel creates {LINK_KIND} links"


def _probe_link() -> None:
    name = f"rmprobe-{secrets.token_hex(4)}"
    pyroute2_netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            ipr.link("add", ifname="rmprobe0", kind=LINK_KIND)
    finally:
        # Deleting the namespace deletes the probe link with it.
        pyroute2_netns.remove(name)

"""gRPC channels to the coordinator, with keepalives that fit its limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc

# The coordinator allows a ping every 20 s without data; ping every 30 s so
# a dead connection is noticed within a minute and the client is never
# sent GOAWAY for pinging too often.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class ChannelSecurity:
    """How this process reaches its coordinator: plaintext, or TLS with the
    system's roots or a private CA (``ca``), optionally checking another
    name than the target's host (``server_name``)."""

    tls: bool = False
    ca: bytes | None = None
    server_name: str | None = None


# Set once by the command line before any channel opens; one process talks
# to one coordinator deployment, so every channel uses the same security.
_security = ChannelSecurity()


def use_security(security: ChannelSecurity) -> None:
    global _security
    _security = security


def open_channel(target: str) -> grpc.aio.Channel:
    if not _security.tls:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
    if _security.server_name:
        options.append(("grpc.ssl_target_name_override", _security.server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=_security.ca)
    return grpc.aio.secure_channel(target, credentials, options=options)


class InvalidTarget(ValueError):
    """Not a HOST:PORT gRPC could dial."""


def check_target(text: str) -> str:
    """`text` if it is HOST:PORT (an IPv6 host in brackets), else InvalidTarget.

    Checked before gRPC sees it: gRPC takes almost any string as a target
    and reports a bad one only as an error from its core.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidTarget(f"expected HOST:PORT with a port 1-65535, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidTarget(f"{host} is not an IPv6 address") from None
    elif any(c in ":/[]@" or c.isspace() or not c.isprintable() for c in host):
        raise InvalidTarget(
            f"{host!r} is not a host name or address (put IPv6 in brackets)"
        )
    return text

"""Who is calling: the API key and the source address of an RPC."""

from __future__ import annotations

import urllib.parse
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]

CLIENT_ADDR_KEY = "x-runmesh-client-addr"


def api_key_of(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if key == "x-api-key" and isinstance(value, str) and value.strip():
            return value.strip()
    return None


def peer_ip(context: Context) -> str | None:
    """The IP of the transport peer (``ipv4:1.2.3.4:5`` or ``ipv6:[::1]:5``)."""
    # grpc percent-encodes the brackets of an IPv6 peer: ipv6:%5B::1%5D:5.
    family, _, rest = urllib.parse.unquote(context.peer()).partition(":")
    if family not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0]
    return host.removeprefix("[").removesuffix("]") or None


def source_of(context: Context, trusted_proxies: frozenset[str]) -> str:
    """The address rate limits count against.

    The gateway forwards its client's address; only a trusted peer may say
    where a call came from, or any client could pick a fresh address for
    every attempt.
    """
    transport = peer_ip(context) or "unknown"
    if transport not in trusted_proxies:
        return transport
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ADDR_KEY and isinstance(value, str) and value:
            return value[:64]
    return transport

"""Who is calling: the credential, the source address and the request id.

The gateway judges whether an API key is valid only by its form. A value no
key can have (over ``MAX_API_KEY_LENGTH`` characters, or anything but visible
ASCII) is refused here as unauthorized: forwarded, a long one would overflow
gRPC's metadata limit and come back as that limit's error, not as a 401. Any
other key goes on as ``authorization: Bearer <key>`` whichever header the
client used, so the coordinator reads one form; the coordinator alone decides
whether the key is known (UNAUTHENTICATED) and may do this
(PERMISSION_DENIED). The source address lets the coordinator rate-limit link
attempts per source.

Routes that need no key take ``AnonymousCallerDep``: a key header sent to them
is neither judged nor forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.envelope import request_id_of
from gateway.errors import ApiError, ErrorCode

# gRPC metadata keys this gateway sends (lowercase, as gRPC requires).
AUTHORIZATION_KEY = "authorization"
CLIENT_ADDR_KEY = "x-runmesh-client-addr"
REQUEST_ID_KEY = "x-request-id"

# Issued keys are far shorter; the cap keeps the metadata well under gRPC's
# 8 KiB soft limit whatever a client sends.
MAX_API_KEY_LENGTH = 128
# An IPv6 address with a zone fits; anything longer is not an address.
_MAX_CLIENT_ADDR_LENGTH = 64

_API_KEY_HEADER = "x-api-key"
_BEARER = "bearer"
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Caller:
    """What the coordinator needs to know about the HTTP client."""

    request_id: str
    api_key: str | None
    client_addr: str | None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs = [(REQUEST_ID_KEY, self.request_id)]
        if self.api_key is not None:
            pairs.append((AUTHORIZATION_KEY, f"Bearer {self.api_key}"))
        if self.client_addr is not None:
            pairs.append((CLIENT_ADDR_KEY, self.client_addr))
        return tuple(pairs)


def api_key_of(request: Request) -> str | None:
    """The key from ``X-API-Key``, else from ``Authorization: Bearer``.

    None when the client sent none; ``ApiError`` (unauthorized) when it sent
    one that cannot be a key.
    """
    key = request.headers.get(_API_KEY_HEADER, "").strip()
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == _BEARER else ""
    if not key:
        return None
    if len(key) > MAX_API_KEY_LENGTH or not _VISIBLE_ASCII.fullmatch(key):
        raise ApiError(ErrorCode.UNAUTHORIZED, "the API key is not valid")
    return key


def caller_of(request: Request) -> Caller:
    """The caller of a route that takes an API key."""
    return _caller(request, api_key_of(request))


def anonymous_caller_of(request: Request) -> Caller:
    """The caller of a route that needs no key; any key header is ignored."""
    return _caller(request, None)


def _caller(request: Request, api_key: str | None) -> Caller:
    # Behind a proxy this is the proxy's view of the client; uvicorn replaces
    # it with X-Forwarded-For only for the proxies it is told to trust.
    host = request.client.host if request.client else None
    return Caller(
        request_id=request_id_of(request),
        api_key=api_key,
        client_addr=host if host and _is_client_addr(host) else None,
    )


def _is_client_addr(host: str) -> bool:
    return len(host) <= _MAX_CLIENT_ADDR_LENGTH and bool(_VISIBLE_ASCII.fullmatch(host))


CallerDep = Annotated[Caller, Depends(caller_of)]
AnonymousCallerDep = Annotated[Caller, Depends(anonymous_caller_of)]

"""Who is calling: the credential, the source address and the request id.

The gateway judges none of it. It passes the API key on as
``authorization: Bearer <key>`` whichever header the client used, so the
coordinator reads one form; the coordinator alone answers UNAUTHENTICATED or
PERMISSION_DENIED. The source address lets the coordinator rate-limit link
attempts per source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.envelope import request_id_of

# gRPC metadata keys this gateway sends (lowercase, as gRPC requires).
AUTHORIZATION_KEY = "authorization"
CLIENT_ADDR_KEY = "x-runmesh-client-addr"
REQUEST_ID_KEY = "x-request-id"

_API_KEY_HEADER = "x-api-key"
_BEARER = "bearer"


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

    A value gRPC cannot carry (not printable ASCII) is dropped rather than
    failing the call: the coordinator then answers as for a missing key.
    """
    key = request.headers.get(_API_KEY_HEADER, "").strip()
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == _BEARER else ""
    if not key or not _fits_metadata(key):
        return None
    return key


def _fits_metadata(value: str) -> bool:
    return value.isascii() and value.isprintable()


def caller_of(request: Request) -> Caller:
    # Behind a proxy this is the proxy's view of the client; uvicorn replaces
    # it with X-Forwarded-For only for the proxies it is told to trust.
    host = request.client.host if request.client else None
    return Caller(
        request_id=request_id_of(request),
        api_key=api_key_of(request),
        client_addr=host if host and _fits_metadata(host) else None,
    )


CallerDep = Annotated[Caller, Depends(caller_of)]

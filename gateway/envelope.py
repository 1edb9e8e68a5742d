"""Request ids and the success envelope ``{"data": …, "meta": {"requestId"}}``.

Each request gets a fresh ``req_`` id in ``RequestIdMiddleware``; the id is
put in the response's ``X-Request-Id`` header, in ``meta.requestId`` or
``error.requestId``, and forwarded to the coordinator so one id follows a
request through both logs. An ``X-Request-Id`` sent by the client is not
reused: ids must be unique to be worth grepping for, and a client could
otherwise make its requests look like someone else's.
"""

from __future__ import annotations

import secrets
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-Id"
_STATE_KEY = "request_id"

DataT = TypeVar("DataT")
ItemT = TypeVar("ItemT")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_of(request: Request) -> str:
    """The id ``RequestIdMiddleware`` gave this request."""
    request_id = request.scope.get("state", {}).get(_STATE_KEY)
    if isinstance(request_id, str):
        return request_id
    # Only reachable when the app runs without its middleware (a test of a
    # single handler); an id is still better than none.
    return new_request_id()


class RequestIdMiddleware:
    """Gives every HTTP request an id and echoes it in ``X-Request-Id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = new_request_id()
        # In place, so handlers outside this middleware (the 500 handler
        # runs in Starlette's outermost layer) see the same id.
        scope.setdefault("state", {})[_STATE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class Meta(_Model):
    request_id: str = Field(examples=["req_5f0c1a9e3b7d4c2a8e6f1b0d"])


class ListMeta(Meta):
    has_more: bool
    # Opaque; pass it back as ``cursor`` for the next page. Null on the last.
    next_cursor: str | None = Field(examples=["eyJvIjoibm9kZV83aDNrIn0"])


class Envelope(_Model, Generic[DataT]):
    data: DataT
    meta: Meta


class ListEnvelope(_Model, Generic[ItemT]):
    data: list[ItemT]
    meta: ListMeta


def envelope(request_id: str, data: DataT) -> Envelope[DataT]:
    return Envelope[DataT](data=data, meta=Meta(request_id=request_id))


def list_envelope(
    request_id: str, items: list[ItemT], *, has_more: bool, next_cursor: str | None
) -> ListEnvelope[ItemT]:
    meta = ListMeta(request_id=request_id, has_more=has_more, next_cursor=next_cursor)
    return ListEnvelope[ItemT](data=items, meta=meta)

"""The cap on request bodies, enforced before anything parses them.

Every body this API takes is a small JSON object, so the whole body is read
here (at most ``MAX_BODY_BYTES``) and handed on in one piece. Counting the
streamed bytes as well as trusting ``Content-Length`` matters: a chunked
upload has no length, and a lying one must not make the gateway buffer more.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ApiError, ErrorCode, error_response

MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The client sent more than ``MAX_BODY_BYTES``."""


class BodyLimitMiddleware:
    """Answers 413 ``invalid_request`` to bodies over the cap; buffers the rest."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        try:
            self._check_declared_length(scope)
            body = await self._read_body(receive)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)
            return
        except ValueError:
            response = error_response(
                Request(scope),
                ApiError(ErrorCode.INVALID_REQUEST, "Content-Length is not a number"),
            )
            await response(scope, receive, send)
            return
        if body is None:
            return  # the client went away mid-body; nobody to answer

        await self.app(scope, _replay(body, receive), send)

    def _check_declared_length(self, scope: Scope) -> None:
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and int(declared) > self.max_bytes:
            raise BodyTooLarge

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {self.max_bytes} bytes"
        error = ApiError(ErrorCode.INVALID_REQUEST, message, status=413)
        await error_response(Request(scope), error)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then the real stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            # After the body, the only message left is the disconnect.
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay

"""The REST error table and the one place where failures become responses.

Every failure a client can see is rendered here, as
``{"error": {"code", "message", "requestId"}}`` with the contract's status:

    Exception
    ├── ApiError          an error to show as it is (code, message, Retry-After)
    ├── UnexpectedReply   the coordinator answered something this gateway cannot
    │                     show (an enum value it does not know): internal
    ├── grpc.aio.AioRpcError      mapped by ``api_error_from_rpc``
    ├── RequestValidationError    shape errors: invalid_request, naming the field
    ├── StarletteHTTPException    routing: unknown path, wrong method
    └── anything else             internal, never with a traceback

Choices the contract leaves open:

- A wrong method answers 405 with the code ``invalid_request`` and an
  ``Allow`` header listing every method of the path (Starlette's names only
  the first matching route's): the request is malformed for that path, and the
  contract's code list stays closed, so clients need no new case.
- A body over the size cap answers 413 with ``invalid_request`` (raised by
  ``gateway.limits``).
- Messages of 4xx answers are the coordinator's own (they explain what to fix)
  only when it sent ``runmesh-reason``, which every error it raises carries. A
  status without one was made by gRPC itself or by something on the way (a
  metadata limit, a proxy), and its details name sizes, hosts and internals:
  the client gets a fixed sentence per code and the log gets the details.
  5xx answers always carry a fixed sentence, because gRPC details of an
  internal or a connection failure name hosts, files and stack frames.
- A validation message names at most ``_MAX_LOCATION`` characters of the
  field's location, so a hostile nesting cannot make the answer kilobytes.

Known limit: a request the HTTP server cannot parse never reaches the app. A
non-numeric or a repeated ``Content-Length`` is refused by uvicorn's h11
parser with its own ``text/plain`` 400 and no ``X-Request-Id``; no ASGI code
runs for it, so nothing here can render it (only replacing uvicorn's protocol
class could). The app's own check of ``Content-Length`` (``gateway.limits``)
covers servers that pass such a header through.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.envelope import REQUEST_ID_HEADER, request_id_of

log = logging.getLogger(__name__)

# Trailing metadata the coordinator attaches to a failed call.
REASON_KEY = "runmesh-reason"
RETRY_AFTER_KEY = "retry-after"

# A 429 must carry Retry-After; when the coordinator gave none, one second
# keeps a well-behaved client from hammering without inventing a long wait.
_DEFAULT_RETRY_AFTER = 1


class ErrorCode(enum.StrEnum):
    """The contract's error codes; each has exactly one HTTP status."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    EXPIRED = "expired"
    RATE_LIMITED = "rate_limited"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.EXPIRED: 410,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.RESOURCE_EXHAUSTED: 409,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}

# Used when the coordinator gives a 4xx without details, and always for 5xx.
_DEFAULT_MESSAGE: Mapping[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: "the request is invalid",
    ErrorCode.UNAUTHORIZED: "a valid API key is required",
    ErrorCode.FORBIDDEN: "the API key may not do this",
    ErrorCode.NOT_FOUND: "not found",
    ErrorCode.CONFLICT: "the request conflicts with the current state",
    ErrorCode.EXPIRED: "the link code has expired",
    ErrorCode.RATE_LIMITED: "too many requests; retry after the given delay",
    ErrorCode.RESOURCE_EXHAUSTED: "no capacity left for this request",
    ErrorCode.INTERNAL: "internal error",
    ErrorCode.UNAVAILABLE: "the coordinator is unavailable; retry later",
}

# Used for a status without ``runmesh-reason``: whatever its details say, the
# coordinator did not say it, so the sentences promise nothing specific.
_UNEXPLAINED_MESSAGE: Mapping[ErrorCode, str] = {
    **_DEFAULT_MESSAGE,
    ErrorCode.INVALID_REQUEST: "the request could not be processed",
    ErrorCode.RESOURCE_EXHAUSTED: "the request could not be processed",
}


class ApiError(Exception):
    """An error answered to the client exactly as given."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or _DEFAULT_MESSAGE[code])
        self.code = code
        self.message = message or _DEFAULT_MESSAGE[code]
        # Only for the few statuses outside the table (405, 413).
        self.status = status or code.status
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class UnexpectedReply(Exception):
    """The coordinator's answer holds something this gateway cannot represent."""


# ---- the envelope, as the OpenAPI document shows it ----


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class ErrorBody(_Model):
    code: ErrorCode = Field(examples=["not_found"])
    message: str = Field(examples=["no node with id node_7h3k2m9x"])
    request_id: str = Field(examples=["req_5f0c1a9e3b7d4c2a8e6f1b0d"])


class ErrorEnvelope(_Model):
    error: ErrorBody


_DESCRIPTION: Mapping[int, str] = {
    400: "invalid_request: the body, query or path has the wrong shape",
    401: "unauthorized: missing, malformed or unknown API key",
    403: "forbidden: the API key lacks the scope",
    404: "not_found",
    409: "conflict, or resource_exhausted (no address left)",
    410: "expired: the link code outlived its validity",
    413: "invalid_request: the body is larger than 64 KiB",
    429: "rate_limited: retry after the Retry-After header's seconds",
    500: "internal",
    503: "unavailable: the coordinator cannot be reached",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: the error envelope per status.

    Every route may also answer 500 and 503, so those are always included.
    """
    wanted = sorted({*statuses, 500, 503})
    return {
        status: {"model": ErrorEnvelope, "description": _DESCRIPTION[status]}
        for status in wanted
    }


def error_response(request: Request, error: ApiError) -> JSONResponse:
    """The JSON response for ``error``; the only place an envelope is built."""
    request_id = request_id_of(request)
    body = ErrorEnvelope(
        error=ErrorBody(code=error.code, message=error.message, request_id=request_id)
    )
    headers = {**error.headers, REQUEST_ID_HEADER: request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(
        body.model_dump(mode="json", by_alias=True),
        status_code=error.status,
        headers=headers,
    )


# ---- gRPC → REST ----

_KNOWN_REASONS = frozenset(code.value for code in ErrorCode)

_BY_STATUS: Mapping[Any, ErrorCode] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.UNAUTHORIZED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorCode.FORBIDDEN,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ErrorCode.CONFLICT,
    grpc.StatusCode.ABORTED: ErrorCode.CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.CONFLICT,
    grpc.StatusCode.UNAVAILABLE: ErrorCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.UNAVAILABLE,
}


def api_error_from_rpc(error: Any, request_id: str) -> ApiError:
    """Map a failed coordinator call (a ``grpc.aio.AioRpcError``) to the contract.

    The coordinator's ``runmesh-reason`` wins when it names a known code,
    because several REST codes share one gRPC status (expired and conflict
    are both FAILED_PRECONDITION to gRPC). Otherwise the status decides.
    """
    status = error.code()
    details = error.details() or ""
    trailers = _text_metadata(error.trailing_metadata())
    reason = trailers.get(REASON_KEY)
    retry_after = _seconds(trailers.get(RETRY_AFTER_KEY))
    code = _code_for(status, reason, retry_after)

    if code is ErrorCode.RATE_LIMITED and retry_after is None:
        retry_after = _DEFAULT_RETRY_AFTER
    if reason is not None and code.status < 500:
        return ApiError(code, details or None, retry_after=retry_after)

    _log_hidden_details(code, status, details, request_id)
    messages = _DEFAULT_MESSAGE if reason is not None else _UNEXPLAINED_MESSAGE
    return ApiError(code, messages[code], retry_after=retry_after)


def _log_hidden_details(
    code: ErrorCode, status: Any, details: str, request_id: str
) -> None:
    # %.500s: a peer that is not the coordinator may send any size of details.
    if code is ErrorCode.INTERNAL:
        log.error(
            "coordinator call failed with %s: %.500s request_id=%s; "
            "the coordinator's log has the cause",
            status,
            details,
            request_id,
        )
    elif code is ErrorCode.UNAVAILABLE:
        log.warning(
            "coordinator unreachable (%s): %.500s request_id=%s",
            status,
            details,
            request_id,
        )
    else:
        log.warning(
            "coordinator call failed with %s and no %s: %.500s request_id=%s; "
            "answered %s without the details",
            status,
            REASON_KEY,
            details,
            request_id,
            code.value,
        )


def _code_for(status: Any, reason: str | None, retry_after: int | None) -> ErrorCode:
    if reason in _KNOWN_REASONS:
        return ErrorCode(reason)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if retry_after is not None:
            return ErrorCode.RATE_LIMITED
        return ErrorCode.RESOURCE_EXHAUSTED
    return _BY_STATUS.get(status, ErrorCode.INTERNAL)


def _text_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> dict[str, str]:
    # Binary ("-bin") entries never carry the reason or a delay.
    return {
        key.lower(): value for key, value in metadata or () if isinstance(value, str)
    }


def _seconds(value: str | None) -> int | None:
    """A retry-after value as whole seconds, rounded up; None when unusable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return math.ceil(seconds)


# ---- shape and routing errors ----

_MAX_LOCATION = 64


def api_error_from_validation(error: RequestValidationError) -> ApiError:
    """invalid_request naming each offending field: ``publicKey: field required``."""
    problems = [_describe(problem) for problem in error.errors()]
    return ApiError(ErrorCode.INVALID_REQUEST, "; ".join(problems[:5]))


def _describe(problem: Mapping[str, Any]) -> str:
    location = [str(part) for part in problem.get("loc", ())]
    kind = problem.get("type", "")
    where = location[1:]  # drop "body" / "query" / "path"

    if kind == "json_invalid":
        return "body is not valid JSON"
    if location == ["body"]:
        if isinstance(problem.get("input"), bytes):
            return "body must be JSON, sent with Content-Type: application/json"
        return "body must be a JSON object"
    if kind == "value_error" and "error" in problem.get("ctx", {}):
        text = str(problem["ctx"]["error"])
    else:
        text = str(problem.get("msg", "is invalid"))
    return f"{_short_location(where) or location[0]}: {text[:1].lower()}{text[1:]}"


def _short_location(parts: list[str]) -> str:
    # The head names the field the client sent; past it, a path hundreds of
    # levels deep helps nobody and only makes the answer large.
    path = ".".join(parts)
    if len(path) <= _MAX_LOCATION:
        return path
    return path[: _MAX_LOCATION - 1] + "…"


def api_error_from_http(
    error: StarletteHTTPException, allowed: Iterable[str] = ()
) -> ApiError:
    """Routing answers (unknown path, wrong method) in the envelope.

    ``allowed`` are the methods the path takes, for a 405's ``Allow``.
    """
    headers = dict(error.headers or {})
    if error.status_code == 404:
        return ApiError(ErrorCode.NOT_FOUND, "no such route", headers=headers)
    if error.status_code == 405:
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
        return ApiError(
            ErrorCode.INVALID_REQUEST,
            "method not allowed on this path",
            status=405,
            headers=headers,
        )
    if error.status_code >= 500:
        return ApiError(ErrorCode.INTERNAL)
    return ApiError(
        ErrorCode.INVALID_REQUEST,
        str(error.detail),
        status=error.status_code,
        headers=headers,
    )


def allowed_methods(request: Request) -> set[str]:
    """Every method the OpenAPI document gives the request's path.

    The published document, not the router, because it is the contract and
    FastAPI's nested routers do not expose their routes for matching.
    """
    template = documented_template(request)
    if template is None:
        return set()
    return {method.upper() for method in _documented_paths(request)[template]}


def documented_template(request: Request) -> str | None:
    """The OpenAPI path template the request's path falls under, if any."""
    for template in _documented_paths(request):
        if _path_pattern(template).fullmatch(request.url.path):
            return template
    return None


def _documented_paths(request: Request) -> Mapping[str, Mapping[str, Any]]:
    paths: Mapping[str, Mapping[str, Any]] = request.app.openapi().get("paths", {})
    return paths


def _path_pattern(template: str) -> re.Pattern[str]:
    # "/v1/runmesh/nodes/{id}" matches one segment where "{id}" stands.
    parts = re.split(r"\{[^/{}]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


# ---- the handlers ----


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler; routes never catch errors themselves."""

    async def on_api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return error_response(request, error)

    async def on_rpc_error(request: Request, error: Exception) -> JSONResponse:
        api_error = api_error_from_rpc(error, request_id_of(request))
        return error_response(request, api_error)

    async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(request, api_error_from_validation(error))

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        allowed = allowed_methods(request) if error.status_code == 405 else ()
        return error_response(request, api_error_from_http(error, allowed))

    async def on_unexpected_reply(request: Request, error: Exception) -> JSONResponse:
        log.error(
            "coordinator reply not understood (%s) request_id=%s; "
            "is the gateway older than the coordinator?",
            error,
            request_id_of(request),
        )
        return error_response(request, ApiError(ErrorCode.INTERNAL))

    async def on_anything(request: Request, error: Exception) -> JSONResponse:
        # The server logs the traceback; this line ties it to the request id.
        log.error(
            "unhandled %s request_id=%s", type(error).__name__, request_id_of(request)
        )
        return error_response(request, ApiError(ErrorCode.INTERNAL))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(grpc.aio.AioRpcError, on_rpc_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(UnexpectedReply, on_unexpected_reply)
    app.add_exception_handler(Exception, on_anything)

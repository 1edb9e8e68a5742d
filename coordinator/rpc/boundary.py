"""The one place where coordinator errors become gRPC statuses.

Every servicer method is wrapped by ``translate_errors``. A
``CoordinatorError`` becomes its status with the message as details, the
REST reason in the trailing metadata ``runmesh-reason`` and, for rate
limits, ``retry-after``. Anything else is logged with its traceback here and
answered INTERNAL with a generic message: no traceback reaches a client.

Requests are parsed by ``tolerant_parser``: bytes that are not a valid
message become a ``Malformed`` placeholder, which the method's guard turns
into INVALID_ARGUMENT. (Left to grpc, a parse failure was answered UNKNOWN
with the parser's exception in the details, and logged with a traceback.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from sqlalchemy.exc import OperationalError

from coordinator import metrics
from coordinator.errors import CoordinatorError, Malformed, Overloaded, RateLimited

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Link-flow RPCs whose failures are counted by reason in the metrics.
LINK_STEPS = {"StartLink": "start", "PollLink": "poll", "ApproveLink": "approve"}

REASON_KEY = "runmesh-reason"
RETRY_AFTER_KEY = "retry-after"

S = TypeVar("S")
Q = TypeVar("Q")
R = TypeVar("R")

Method = Callable[[S, Q, Context], Awaitable[R]]


def tolerant_parser(message_type: type[Message]) -> Callable[[bytes], Any]:
    """``message_type.FromString``, or ``Malformed`` for bytes that are not one."""
    name = message_type.DESCRIPTOR.name

    def parse(raw: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(raw)
        except DecodeError:
            return Malformed(name)

    return parse


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def add_unary_service(
    server: grpc.aio.Server, servicer: object, service: ServiceDescriptor
) -> None:
    """Register every (unary) method of ``service`` with tolerant parsing."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=tolerant_parser(
                message_factory.GetMessageClass(method.input_type)
            ),
            response_serializer=_serialize,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def translate_errors(method: Method[S, Q, R]) -> Method[S, Q, R]:
    @functools.wraps(method)
    async def guarded(self: S, request: Q, context: Context) -> R:
        try:
            if isinstance(request, Malformed):
                raise request.refuse()
            return await method(self, request, context)
        except CoordinatorError as exc:
            step = LINK_STEPS.get(method.__name__)
            if step is not None:
                metrics.LINK_REQUESTS.labels(step, exc.reason).inc()
            metadata: list[tuple[str, str]] = [(REASON_KEY, exc.reason)]
            if isinstance(exc, RateLimited | Overloaded):
                metadata.append((RETRY_AFTER_KEY, str(exc.retry_after)))
            context.set_trailing_metadata(tuple(metadata))
            await context.abort(exc.status, exc.message)
        except OperationalError:
            log.exception("database unavailable in %s", method.__name__)
            context.set_trailing_metadata(((REASON_KEY, "unavailable"),))
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the database is unavailable"
            )
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("context.abort always raises")

    return guarded

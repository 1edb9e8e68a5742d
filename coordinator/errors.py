"""The coordinator's error tree.

    CoordinatorError            (carries a gRPC status and a REST reason)
    ├── InvalidArgument         invalid_request
    ├── Unauthenticated         unauthorized
    ├── PermissionDenied        forbidden (API keys) / node auth failures
    ├── NotFound                not_found
    ├── Conflict                conflict
    ├── Expired                 expired
    ├── RateLimited             rate_limited, with retry_after seconds
    ├── Unavailable             unavailable (shutting down)
    └── ResourceExhausted       resource_exhausted (address pool, capacity)
        └── Overloaded          too many stream set-ups at once, with retry_after

Domain code raises these; exactly one place per transport (the servicers'
error boundary in ``coordinator.rpc``) turns them into gRPC statuses, with
the REST reason in the trailing metadata key ``runmesh-reason`` so the
gateway maps each to its documented code without guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class CoordinatorError(Exception):
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CoordinatorError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_request"


class Unauthenticated(CoordinatorError):
    status = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthorized"


class PermissionDenied(CoordinatorError):
    status = grpc.StatusCode.PERMISSION_DENIED
    reason = "forbidden"


class NotFound(CoordinatorError):
    status = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class Conflict(CoordinatorError):
    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "conflict"


class Expired(CoordinatorError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "expired"


class RateLimited(CoordinatorError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ResourceExhausted(CoordinatorError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "resource_exhausted"


class Unavailable(CoordinatorError):
    status = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class Overloaded(ResourceExhausted):
    """Too much arriving at once (a reconnect storm); come back later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True)
class Malformed:
    """What a request parses to when its bytes are not a valid message of
    its type (see ``coordinator.rpc.boundary.tolerant_parser``)."""

    type_name: str

    def refuse(self) -> InvalidArgument:
        return InvalidArgument(f"the request is not a valid {self.type_name}")

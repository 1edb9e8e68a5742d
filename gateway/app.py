"""The FastAPI app: routes, middleware, error handlers and the channel's life.

``create_app`` builds everything but connects nothing; the gRPC channel is
opened when the server starts the app (lifespan) and closed when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway import errors
from gateway.access import AccessMiddleware
from gateway.coordinator import (
    DEFAULT_DEADLINE_SECONDS,
    PLAINTEXT,
    ChannelSecurity,
    Coordinator,
)
from gateway.envelope import RequestIdMiddleware
from gateway.limits import BodyLimitMiddleware
from gateway.routes import activity, audit, links, nodes, operations, overview

# Routes that take no API key; every other route needs one.
_OPEN_ROUTES = frozenset(
    {
        "/v1/runmesh/devices/link/start",
        "/v1/runmesh/devices/link/poll",
        "/healthz",
        "/readyz",
    }
)

_ROUTERS = (
    links.router,
    overview.router,
    nodes.router,
    audit.router,
    activity.router,
    operations.router,
)


def create_app(
    coordinator_target: str,
    *,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
    security: ChannelSecurity = PLAINTEXT,
) -> FastAPI:
    """The gateway for the coordinator at ``coordinator_target`` (host:port)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        coordinator = Coordinator.connect(
            coordinator_target, deadline=deadline, security=security
        )
        app.state.coordinator = coordinator
        try:
            yield
        finally:
            await coordinator.close()

    app = FastAPI(
        title="RunMesh gateway",
        version="1",
        description="REST API of the RunMesh control plane.",
        lifespan=lifespan,
        # "/nodes/" is an unknown path (404 in the envelope), not a 307 to
        # "/nodes": a redirect is no answer the API documents, and a PATCH or
        # DELETE that follows one lands on a route that does not take it.
        redirect_slashes=False,
    )
    for router in _ROUTERS:
        app.include_router(router)
    errors.install_error_handlers(app)

    # Added last is outermost: the request id must exist before the body
    # limit answers, so that its 413 carries one too, and before the access
    # line is written, which counts that 413 like any answer.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AccessMiddleware)
    app.add_middleware(RequestIdMiddleware)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema without FastAPI's automatic 422: this API answers 400."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
        for route, path in schema.get("paths", {}).items():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
                if route not in _OPEN_ROUTES:
                    # Either header carries the same key.
                    operation["security"] = [{"apiKey": []}, {"bearer": []}]
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema

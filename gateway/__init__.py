"""The REST gateway: a stateless FastAPI app in front of the coordinator's gRPC.

Every route decodes a request, makes one RPC and encodes the answer; the
gateway holds no state, and its only auth decision is refusing an API key
whose form no key has (``gateway.caller``). ``create_app`` in
``gateway.app`` builds the app, ``gateway.cli`` runs it on uvicorn.

Besides the API the app serves its contract: ``/openapi.json``, and two HTML
pages rendered from it, ``/docs`` (Swagger UI) and ``/redoc``. The pages are
FastAPI's, answer outside the JSON envelope and are left out of the OpenAPI
document, which describes the API alone. Two probes, ``/healthz``
(liveness) and ``/readyz`` (the coordinator's gRPC health), sit outside
``/v1`` and are documented under the tag ``operations``.
"""

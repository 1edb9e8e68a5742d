"""The REST gateway: a stateless FastAPI app in front of the coordinator's gRPC.

Every route decodes a request, makes one RPC and encodes the answer; the
gateway holds no state and makes no auth decision. ``create_app`` in
``gateway.app`` builds the app, ``gateway.cli`` runs it on uvicorn.
"""

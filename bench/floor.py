"""The floor: the same fan-out against a bare grpc.aio server.

``python -m bench.floor --port P`` serves three methods. ``Sync`` is
shaped as RunMesh's Sync: a bidirectional stream whose server keeps a read
pending for what the client may send (a node's keepalives), as any
bidirectional server does. ``Hold`` is a server stream (unary request),
which grpc.aio writes to more cheaply: measured here, about 20–30 % less
per write than to a bidirectional stream with a read pending. Either sends
initial metadata, so the client knows the stream is open, then, for every
round, waits for the round's event and writes the round's pre-built
message. ``Fire`` (unary) takes the bytes to send — the benchmark passes
the very delta RunMesh sent — and starts a round. All use passthrough
serializers, so no time goes into protobuf on the server: this is what
pushing one message to N open streams costs in grpc.aio on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from coordinator.server import SERVER_OPTIONS

HOLD = "/bench.Floor/Hold"
SYNC = "/bench.Floor/Sync"
FIRE = "/bench.Floor/Fire"

# The stream shapes the floor can hold: "bidi" is Sync's.
SHAPES = ("bidi", "server-stream")


def _same(raw: bytes) -> bytes:
    return raw


class FloorServer:
    def __init__(self) -> None:
        self.fired = asyncio.Event()
        self.payload = b""

    async def hold(self, request: bytes, context: Any) -> None:
        await context.send_initial_metadata(())
        await self._push(context)

    async def sync(self, requests: AsyncIterator[bytes], context: Any) -> None:
        await context.send_initial_metadata(())
        reader = asyncio.create_task(self._drain(requests))
        try:
            await self._push(context)
        finally:
            reader.cancel()

    async def _drain(self, requests: AsyncIterator[bytes]) -> None:
        async for _ in requests:
            pass

    async def _push(self, context: Any) -> None:
        while True:  # held until the client cancels
            # Fire swaps in the next round's event before it sets this one.
            await self.fired.wait()
            await context.write(self.payload)

    async def fire(self, request: bytes, context: Any) -> bytes:
        fired, self.fired = self.fired, asyncio.Event()
        self.payload = request
        fired.set()
        return b""


async def serve(port: int) -> None:
    floor = FloorServer()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    handlers = {
        "Hold": grpc.unary_stream_rpc_method_handler(
            floor.hold, request_deserializer=_same, response_serializer=_same
        ),
        "Sync": grpc.stream_stream_rpc_method_handler(
            floor.sync, request_deserializer=_same, response_serializer=_same
        ),
        "Fire": grpc.unary_unary_rpc_method_handler(
            floor.fire, request_deserializer=_same, response_serializer=_same
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Floor", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def open_stream(channel: grpc.aio.Channel, shape: str) -> Any:
    if shape == "bidi":
        return channel.stream_stream(
            SYNC, request_serializer=_same, response_deserializer=_same
        )()
    if shape == "server-stream":
        return channel.unary_stream(
            HOLD, request_serializer=_same, response_deserializer=_same
        )(b"")
    raise ValueError(f"no floor stream shape {shape!r}")


async def fire(target: str, payload: bytes) -> float:
    """Send ``payload`` to every held stream; returns time.time() just before
    the Fire call (the channel is connected first, as for ApproveLink)."""
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.unary_unary(
            FIRE, request_serializer=_same, response_deserializer=_same
        )
        await channel.channel_ready()
        before = time.time()
        await method(payload, timeout=60)
        return before


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))

"""The floor: the same fan-out against a bare grpc.aio server.

``python -m bench.floor --port P`` serves three methods. ``Sync`` is
shaped as RunMesh's Sync: a bidirectional stream whose server keeps a read
pending for what the client may send (a node's keepalives), as any
bidirectional server does. ``Hold`` is a server stream (unary request),
which grpc.aio writes to somewhat more cheaply: 5–10 % lower p99 at 1,000
streams with the two taken in turn (20–30 % less per write measured on a
bare server alone). Either sends
initial metadata, so the client knows the stream is open, then, for every
round, waits for the round's event and writes the round's pre-built
message. ``Fire`` (unary) takes the bytes to send — the benchmark passes
the very delta RunMesh sent — and starts a round. All use passthrough
serializers, so no time goes into protobuf on the server, and the
process's garbage collector is tuned as the coordinator's is: this is what
pushing one message to N open streams costs in grpc.aio on this machine.

``FloorStreams`` is the client side, held in the fleet's worker processes
next to the nodes' own streams, so the floor's rounds and RunMesh's are
taken in turn with the same client processes in the same state.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from bench import services
from coordinator import collector
from coordinator.server import SERVER_OPTIONS
from runmesh.v1 import mesh_pb2

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
    # The coordinator's collector settings (coordinator.collector): without
    # them one round in seven or so stopped for a full collection of the
    # streams' objects (110-160 ms against about 60), a pause the
    # coordinator is tuned not to take. The floor is meant to be the best
    # grpc.aio can do, so it is tuned the same way.
    collecting = asyncio.create_task(collector.keep_collecting())
    try:
        await server.wait_for_termination()
    finally:
        collecting.cancel()


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


class FloorStreams:
    """``count`` floor streams of one shape, held by one client process.

    Each message is timed when read() returns it, then parsed and searched
    for the round's new peer (``expected()``, the key RunMesh's round just
    added) as a node does with a delta, so the clients work as hard as in
    RunMesh's rounds. The k-th message of a stream is the k-th round's.
    """

    def __init__(self, channels: list[grpc.aio.Channel], shape: str) -> None:
        self.channels = channels
        self.shape = shape
        self.opened = 0
        self.times: list[list[float]] = []
        self.calls: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    def open(self, count: int, expected: Callable[[], str]) -> None:
        self.tasks = [
            asyncio.create_task(self._hold(i, expected)) for i in range(count)
        ]

    async def _hold(self, i: int, expected: Callable[[], str]) -> None:
        call = open_stream(self.channels[i % len(self.channels)], self.shape)
        self.calls.append(call)
        await call.initial_metadata()
        self.opened += 1
        for k in itertools.count():
            raw = await call.read()
            if raw is grpc.aio.EOF:
                return
            received_at = time.time()
            message = mesh_pb2.CoordinatorMessage.FromString(raw)
            key = expected()
            if not any(p.public_key == key for p in message.delta.upserted):
                raise RuntimeError("the floor sent something else")
            while len(self.times) <= k:
                self.times.append([])
            self.times[k].append(received_at)

    def received(self, round_index: int) -> list[float]:
        """The receive times of one round so far."""
        return self.times[round_index] if round_index < len(self.times) else []

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()


async def fire(target: str, payload: bytes) -> float:
    """Send ``payload`` to every held stream; returns time.time() just before
    the Fire call (the channel is connected first, as for ApproveLink)."""
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.unary_unary(
            FIRE, request_serializer=_same, response_deserializer=_same
        )
        await services.connected(channel, f"the floor server at {target}")
        before = time.time()
        await method(payload, timeout=60)
        return before


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))

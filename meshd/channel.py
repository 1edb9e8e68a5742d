"""gRPC channels to the coordinator, with keepalives that fit its limits."""

from __future__ import annotations

import grpc

# The coordinator allows a ping every 20 s without data; ping every 30 s so
# a dead connection is noticed within a minute and the client is never
# sent GOAWAY for pinging too often.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)

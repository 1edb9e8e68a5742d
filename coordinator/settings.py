"""Tunable behaviour of one coordinator process, set from the command line."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from coordinator.hub import Coalescing
from coordinator.presence import PresenceTiming
from coordinator.ratelimit import Policy


@dataclass(frozen=True)
class Settings:
    # Where the device is told to open Sync (what PollLink returns).
    advertise_target: str = "127.0.0.1:50443"
    # Base of the page where a member approves a code; "?code=…" is added.
    approve_url: str = "http://127.0.0.1:8080/link"
    link_ttl: dt.timedelta = field(default_factory=lambda: dt.timedelta(minutes=10))
    # Seconds a device waits between polls.
    link_interval: int = 5
    # A freed address is reused only after this long.
    address_quarantine: dt.timedelta = field(
        default_factory=lambda: dt.timedelta(hours=24)
    )
    # Seconds between keepalives sent down each stream.
    keepalive_interval: float = 25.0
    # A stream silent this many keepalive intervals is closed.
    keepalive_misses: int = 3
    # Prefix length of the IPv4 block a new org gets.
    org_ipv4_prefix_length: int = 16
    # Peers whose x-runmesh-client-addr metadata is believed (the gateway);
    # for anyone else the transport address is the source.
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    coalescing: Coalescing = field(default_factory=Coalescing)
    presence: PresenceTiming = field(default_factory=PresenceTiming)
    # Stream set-ups (authenticate, subscribe, first map) in progress at once.
    setup_concurrency: int = 64
    # Deltas queued per stream before a slow stream is reset to a full map.
    stream_queue_limit: int = 64
    limits: Policy = field(default_factory=Policy)
    # How long the change log keeps a change (the reach of a resume).
    change_retention: dt.timedelta = field(
        default_factory=lambda: dt.timedelta(hours=24)
    )

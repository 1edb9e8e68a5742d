"""`runmesh-coordinator serve` with no flags behaves as the documented
defaults in ``Settings`` say. (The CLI once defaulted --keepalive to 15 s
while the settings, meshd and the docs said 25 s.)"""

from __future__ import annotations

import click

from coordinator import cli
from coordinator.hub import Coalescing
from coordinator.presence import PresenceTiming
from coordinator.settings import Settings


def serve_default(name: str) -> object:
    for param in cli.serve.params:
        if isinstance(param, click.Option) and param.name == name:
            return param.default
    raise AssertionError(f"serve has no option {name}")


def test_serve_defaults_are_the_settings_defaults() -> None:
    settings = Settings()
    assert serve_default("keepalive") == settings.keepalive_interval == 25.0
    assert serve_default("coalesce_ms") == round(Coalescing().quiet * 1000)
    assert Coalescing.from_quiet(Coalescing().quiet) == Coalescing()
    assert serve_default("link_ttl") == settings.link_ttl.total_seconds()
    assert serve_default("link_interval") == settings.link_interval
    assert serve_default("presence_grace") == PresenceTiming().grace
    assert serve_default("presence_heartbeat") == PresenceTiming().heartbeat
    assert (
        serve_default("change_retention") == settings.change_retention.total_seconds()
    )
    assert serve_default("stream_queue_limit") == settings.stream_queue_limit
    assert set(serve_default("trusted_proxies")) == settings.trusted_proxies

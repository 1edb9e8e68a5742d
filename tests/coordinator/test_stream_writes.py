"""StreamWrites: the lock-free tally of what the Sync streams wrote, as
Prometheus reads it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from coordinator.metrics import StreamWrites


def scrape(writes: StreamWrites) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(writes)
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_a_latency_on_a_bound_counts_in_that_bucket_buckets_add_up() -> None:
    writes = StreamWrites(buckets=(0.01, 0.1))
    for latency in (0.01, 0.011, 0.1, 7.0):
        writes.delta_written(latency)
    seen = scrape(writes)
    assert seen['runmesh_fanout_latency_seconds_bucket{le="0.01"}'] == 1
    assert seen['runmesh_fanout_latency_seconds_bucket{le="0.1"}'] == 3
    assert seen['runmesh_fanout_latency_seconds_bucket{le="+Inf"}'] == 4
    assert seen["runmesh_fanout_latency_seconds_count"] == 4
    assert abs(seen["runmesh_fanout_latency_seconds_sum"] - 7.121) < 1e-9


def test_maps_are_counted_by_kind_and_every_written_delta_counts() -> None:
    writes = StreamWrites(buckets=(0.01,))
    writes.count("full_map")
    writes.count("resume")
    writes.count("delta")  # a delta composed for one stream: no latency
    writes.delta_written(0.002)
    seen = scrape(writes)
    assert seen['runmesh_maps_sent_total{kind="full_map"}'] == 1
    assert seen['runmesh_maps_sent_total{kind="resume"}'] == 1
    assert seen['runmesh_maps_sent_total{kind="delta"}'] == 2
    assert seen["runmesh_fanout_latency_seconds_count"] == 1


def test_nothing_written_scrapes_as_zeros() -> None:
    seen = scrape(StreamWrites(buckets=(0.01,)))
    assert seen['runmesh_maps_sent_total{kind="delta"}'] == 0
    assert seen["runmesh_fanout_latency_seconds_count"] == 0

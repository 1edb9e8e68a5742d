"""REST: latency of the gateway's list and overview endpoints at N nodes.

    python -m bench.rest --nodes 10000

N nodes are linked through the real RPCs (no streams), a real
``runmesh-gateway serve`` process is started, and each endpoint is asked
``--requests`` times in a row with httpx: the first page of
GET /v1/runmesh/nodes?limit=100, a deep page (reached by following
nextCursor to page ``--deep-page``), and GET /v1/runmesh/overview.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import httpx

from bench import flags, services, simfleet
from bench.report import emit, note, percentile


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    simfleet.add_fleet_arguments(parser, nodes=10_000)
    parser.add_argument("--requests", type=flags.whole(1), default=200)
    parser.add_argument("--deep-page", type=flags.whole(1), default=90)
    args = parser.parse_args()
    with services.bench_run("rest", args.keep) as stack:
        run(args, stack)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    coordinator, fleet, created, approvals = simfleet.setup(args, stack)
    gateway = services.Gateway(
        stack.workdir,  # type: ignore[attr-defined]
        coordinator.target,
        coordinator.placement.servers,
    )
    stack.callback(gateway.stop)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.port}/v1/runmesh",
        headers={"X-API-Key": coordinator.admin_key},
        timeout=30,
    ) as http:
        first = http.get("/nodes", params={"limit": 100})
        first.raise_for_status()
        cursor, pages, seen = _follow(http, args.deep_page)
        note(f"deep page {pages} reached ({seen} nodes listed before it)")
        overview = http.get("/overview").json()["data"]
        lists = _time(http, "/nodes", {"limit": 100}, args.requests)
        deep = _time(http, "/nodes", {"limit": 100, "cursor": cursor}, args.requests)
        over = _time(http, "/overview", {}, args.requests)

    result = {
        "nodes": created,
        "list_p50_ms": percentile(lists, 50),
        "list_p99_ms": percentile(lists, 99),
        "list_deep_p50_ms": percentile(deep, 50),
        "list_deep_p99_ms": percentile(deep, 99),
        "overview_p50_ms": percentile(over, 50),
        "overview_p99_ms": percentile(over, 99),
        "deep_page": pages,
        "first_page_items": len(first.json()["data"]),
        "overview_total": overview.get("total"),
        "answered": len(lists) + len(deep) + len(over),
        "requests": 3 * args.requests,
        "approvals_per_s": approvals,
        "loadavg": services.loadavg(),
        "cpus": coordinator.placement.as_json(),
    }
    rows = [
        ("nodes", created),
        (
            "GET /nodes?limit=100 first page p50 / p99 ms",
            f"{result['list_p50_ms']:.1f} / {result['list_p99_ms']:.1f}",
        ),
        (
            f"GET /nodes page {pages} (cursor) p50 / p99 ms",
            f"{result['list_deep_p50_ms']:.1f} / {result['list_deep_p99_ms']:.1f}",
        ),
        (
            "GET /overview p50 / p99 ms",
            f"{result['overview_p50_ms']:.1f} / {result['overview_p99_ms']:.1f}",
        ),
        ("overview total", overview.get("total")),
        ("requests answered 200 OK", f"{result['answered']} / {result['requests']}"),
        ("machine load average (2 cores)", result["loadavg"]),
        ("CPUs", coordinator.placement.describe()),
    ]
    emit(f"bench.rest --nodes {args.nodes}", rows, result)


def _follow(http: httpx.Client, page: int) -> tuple[str, int, int]:
    """The cursor of page ``page`` (1-based), or of the last page there is."""
    cursor, seen = "", 0
    for number in range(1, page):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        body = http.get("/nodes", params=params).raise_for_status().json()
        seen += len(body["data"])
        following = body["meta"].get("nextCursor")
        if not following:
            return cursor, number, seen - len(body["data"])
        cursor = following
    return cursor, page, seen


def _time(http: httpx.Client, path: str, params: dict, count: int) -> list[float]:
    """Milliseconds of each answered (200) request, asked one after another."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = http.get(path, params=params)
        if response.status_code == 200:
            times.append((time.perf_counter() - started) * 1000)
    return times


if __name__ == "__main__":
    main()

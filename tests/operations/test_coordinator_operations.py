"""Running the coordinator like production: TLS, health, shutdown, metrics,
logs and reflection, against real coordinator processes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import simclient
from support.pki import issue
from support.processes import BIN, create_key, free_port, start_coordinator

from runmesh.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
    return int(answer.status)


def test_tls_listener_trusts_only_its_ca_and_refuses_plaintext(tmp_path: Path) -> None:
    pki = issue(tmp_path / "pki")
    other = issue(tmp_path / "other", ca_name="Some other CA")
    coordinator = start_coordinator(
        tmp_path, extra=["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    )
    try:
        trusted = grpc.ssl_channel_credentials(pki.ca.read_bytes())
        with grpc.secure_channel(coordinator.target, trusted) as channel:
            assert health_of(channel) == SERVING

        wrong = grpc.ssl_channel_credentials(other.ca.read_bytes())
        with grpc.secure_channel(coordinator.target, wrong) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                health_of(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        with grpc.insecure_channel(coordinator.target) as channel:
            with pytest.raises(grpc.RpcError) as plain:
                health_of(channel)
            assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        coordinator.stop()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--listen", "0.0.0.0:{port}"], "refusing to serve plaintext gRPC"),
        (["--listen", "127.0.0.1:{port}", "--tls-cert", "x.pem"], "given together"),
    ],
)
def test_unsafe_or_half_configured_listeners_exit_with_a_reason(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    port = free_port()
    done = subprocess.run(
        [
            str(BIN / "runmesh-coordinator"),
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'c.db'}",
            *[a.format(port=port) for a in argv],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", ["not-pem", "key-of-another-cert", "encrypted-key"])
def test_unusable_tls_files_are_named_not_taken_for_a_busy_port(
    tmp_path: Path, case: str
) -> None:
    # Regression: grpc only failed to bind, and the coordinator said
    # "cannot listen on 127.0.0.1:PORT" as if the port were taken; an
    # encrypted key made it ask for a passphrase on the terminal.
    pki = issue(tmp_path / "pki")
    cert, key = pki.cert, pki.key
    if case == "not-pem":
        cert = key = tmp_path / "passwd"
        cert.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif case == "key-of-another-cert":
        key = issue(tmp_path / "other").key
    else:
        plain = serialization.load_pem_private_key(pki.key.read_bytes(), None)
        key = tmp_path / "encrypted.pem"
        key.write_bytes(
            plain.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            )
        )
    done = subprocess.run(
        [
            str(BIN / "runmesh-coordinator"),
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'c.db'}",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "cannot use the TLS files" in done.stderr, done.stderr
    assert "cannot listen" not in done.stderr
    assert "pass phrase" not in done.stderr
    assert "Traceback" not in done.stderr


def test_health_is_serving_then_not_serving_while_shutting_down(
    tmp_path: Path,
) -> None:
    coordinator = start_coordinator(tmp_path, extra=["--shutdown-grace", "3"])
    key = create_key(coordinator.db_url)
    try:
        with grpc.insecure_channel(coordinator.target) as channel:
            assert health_of(channel) == SERVING

        async def hold_and_watch() -> list[int]:
            # A stream that ignores Reconnect keeps the shutdown going long
            # enough to see the health answer change.
            async with grpc.aio.insecure_channel(coordinator.target) as aio:
                node = await simclient.link(aio, key, "lingering")
                stream = asyncio.create_task(simclient.hold(node, [coordinator.target]))
                await asyncio.wait_for(node.synced.wait(), 10)
                coordinator.proc.send_signal(signal.SIGTERM)
                seen = []
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline and coordinator.proc.poll() is None:
                    try:
                        stub = health_pb2_grpc.HealthStub(aio)
                        answer = await stub.Check(
                            health_pb2.HealthCheckRequest(service=""), timeout=1
                        )
                        seen.append(int(answer.status))
                    except grpc.aio.AioRpcError:
                        break
                    await asyncio.sleep(0.02)
                stream.cancel()
                return seen

        seen = asyncio.run(hold_and_watch())
        assert NOT_SERVING in seen, seen
        assert coordinator.proc.wait(10) == 0
    finally:
        coordinator.stop(signal.SIGKILL)


def test_sigterm_moves_50_nodes_to_a_second_coordinator_without_losing_anything(
    tmp_path: Path,
) -> None:
    first = start_coordinator(tmp_path, extra=["--presence-heartbeat", "2"])
    second = start_coordinator(
        tmp_path, db_url=first.db_url, extra=["--presence-heartbeat", "2"]
    )
    key = create_key(first.db_url)
    try:

        async def scenario() -> tuple[float, list[simclient.SimNode], set[str]]:
            async with grpc.aio.insecure_channel(first.target) as channel:
                nodes = [await simclient.link(channel, key, f"n{i}") for i in range(50)]
            tasks = [
                asyncio.create_task(simclient.hold(n, [first.target, second.target]))
                for n in nodes
            ]
            await asyncio.wait_for(
                asyncio.gather(*(n.synced.wait() for n in nodes)), 30
            )
            for node in nodes:
                node.synced.clear()

            started = time.monotonic()
            first.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(first.proc.wait, 15)
            exited_after = time.monotonic() - started

            # One more approval after the move: every node must learn of it
            # from the second coordinator.
            async with grpc.aio.insecure_channel(second.target) as channel:
                late = await simclient.link(channel, key, "late")
                listed = await admin_pb2_grpc.AdminServiceStub(channel).ListNodes(
                    admin_pb2.ListNodesRequest(limit=500),
                    metadata=(("authorization", f"Bearer {key}"),),
                )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(late.public_key in n.map.peers for n in nodes):
                    break
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            return exited_after, nodes, {n.id for n in listed.nodes}

        exited_after, nodes, listed = asyncio.run(scenario())
        assert exited_after < 10
        assert first.proc.returncode == 0
        assert {n.node_id for n in nodes} <= listed
        assert len(listed) == 51
        missing = [n.node_id for n in nodes if len(n.map.peers) != 50]
        assert not missing, f"{len(missing)} nodes without the full set of peers"
        assert all("reconnect" in n.kinds for n in nodes)
        assert "shutting down" in first.log() or "stopping" in first.log()
    finally:
        first.stop(signal.SIGKILL)
        second.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_metrics_move_with_a_small_scenario_and_no_label_names_a_node(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    coordinator = start_coordinator(
        tmp_path, extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    )
    key = create_key(coordinator.db_url)
    try:
        before = scrape(metrics_port)

        async def scenario() -> list[simclient.SimNode]:
            async with grpc.aio.insecure_channel(coordinator.target) as channel:
                nodes = [await simclient.link(channel, key, f"m{i}") for i in range(3)]
                tasks = [
                    asyncio.create_task(simclient.hold(n, [coordinator.target]))
                    for n in nodes
                ]
                await asyncio.wait_for(
                    asyncio.gather(*(n.synced.wait() for n in nodes)), 15
                )
                await asyncio.sleep(0.5)  # presence deltas
                await admin_pb2_grpc.AdminServiceStub(channel).RevokeNode(
                    admin_pb2.RevokeNodeRequest(id=nodes[0].node_id),
                    metadata=(("authorization", f"Bearer {key}"),),
                )
                await asyncio.sleep(1.0)
                for task in tasks:
                    task.cancel()
                return nodes

        nodes = asyncio.run(scenario())
        after = scrape(metrics_port)
    finally:
        coordinator.stop()

    assert (
        sample(before, "runmesh_link_requests_total", step="approve", outcome="ok") == 0
    )
    assert (
        sample(after, "runmesh_link_requests_total", step="approve", outcome="ok") == 3
    )
    assert sample(after, "runmesh_link_requests_total", step="start", outcome="ok") == 3
    assert sample(after, "runmesh_approval_latency_seconds_count") == 3
    assert sample(after, "runmesh_stream_setups_total", outcome="ok") >= 3
    assert sample(after, "runmesh_maps_sent_total", kind="full_map") >= 3
    assert sample(after, "runmesh_maps_sent_total", kind="delta") >= 2
    assert sample(after, "runmesh_fanout_latency_seconds_count") >= 2
    assert sample(after, "runmesh_streams_open") <= 2

    forbidden = [n.node_id for n in nodes] + [n.public_key for n in nodes] + [key]
    for line in after.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = line[line.index("{") : line.rindex("}")]
        assert not any(f in labels for f in forbidden), line
        assert "node_" not in labels and "rt_live_" not in labels, line


def test_json_logs_carry_org_and_node_ids_and_never_a_key(tmp_path: Path) -> None:
    coordinator = start_coordinator(tmp_path, env={"RUNMESH_LOG_FORMAT": "json"})
    key = create_key(coordinator.db_url)
    try:

        async def scenario() -> simclient.SimNode:
            async with grpc.aio.insecure_channel(coordinator.target) as channel:
                node = await simclient.link(channel, key, "logged")
                task = asyncio.create_task(simclient.hold(node, [coordinator.target]))
                await asyncio.wait_for(node.synced.wait(), 10)
                task.cancel()
                return node

        node = asyncio.run(scenario())
        time.sleep(0.3)
    finally:
        coordinator.stop()
    records = [
        json.loads(line)
        for line in coordinator.log().splitlines()
        if line.startswith("{")
    ]
    assert records, coordinator.log()
    opened = [r for r in records if "stream opened" in r["message"]]
    assert opened and opened[0]["node_id"] == node.node_id
    assert opened[0]["org_id"].startswith("org_")
    assert {"time", "level", "name", "message"} <= set(records[0])
    assert key not in coordinator.log()
    assert not re.search(r"rt_live_\w{20,}", coordinator.log())


def test_reflection_lists_the_services_when_enabled(tmp_path: Path) -> None:
    coordinator = start_coordinator(tmp_path, extra=["--reflection"])
    try:
        with grpc.insecure_channel(coordinator.target) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            answers = stub.ServerReflectionInfo(iter([request]), timeout=5)
            names = {s.name for a in answers for s in a.list_services_response.service}
    finally:
        coordinator.stop()
    assert {"runmesh.v1.MeshService", "runmesh.v1.AdminService"} <= names


def test_meshd_links_over_tls_with_the_ca_and_is_refused_with_another(
    tmp_path: Path,
) -> None:
    pki = issue(tmp_path / "pki")
    other = issue(tmp_path / "other", ca_name="Some other CA")
    coordinator = start_coordinator(
        tmp_path, extra=["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    )
    meshd = str(BIN / "meshd")
    try:
        linking = subprocess.Popen(
            [
                meshd,
                "link",
                "--ca",
                str(pki.ca),
                "--coordinator",
                coordinator.target,
                "--state-dir",
                str(tmp_path / "good"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert linking.stdout is not None
            first = linking.stdout.readline()
            assert first.startswith("code: "), first
        finally:
            linking.kill()
            linking.wait()

        refused = subprocess.run(
            [
                meshd,
                "link",
                "--ca",
                str(other.ca),
                "--coordinator",
                coordinator.target,
                "--state-dir",
                str(tmp_path / "bad"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0
        assert "cannot reach the coordinator" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        coordinator.stop()

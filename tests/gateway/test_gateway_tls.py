"""TLS on both sides of a real gateway process: its HTTP listener, and its
channel to a real coordinator serving TLS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_fakes import assert_error
from gateway_processes import Gateway, start_gateway, trusting
from support.pki import ThrowawayCa
from support.processes import BIN, Coordinator, create_key, free_port, start_coordinator

# Nothing listens here: the probes and the listener do not need a coordinator.
NO_COORDINATOR = "127.0.0.1:9"


# The CA and the processes are shared by the module's tests: each real
# process takes a second or two to start, and no test changes them.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def ca(workdir: Path) -> ThrowawayCa:
    return ThrowawayCa.create(workdir / "ca")


@pytest.fixture(scope="module")
def https_gateway(workdir: Path, ca: ThrowawayCa) -> Iterator[Gateway]:
    issued = ca.issue(workdir / "gateway")
    flags = ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    gateway = start_gateway(workdir, NO_COORDINATOR, flags, tls=True)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_the_listener_serves_https_to_a_client_trusting_its_ca(
    https_gateway: Gateway, ca: ThrowawayCa
) -> None:
    with https_gateway.client(verify=trusting(ca.cert)) as client:
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"].startswith("req_")


def test_the_tls_listener_answers_no_plaintext_http(https_gateway: Gateway) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{https_gateway.service.target}/healthz", timeout=5)


def test_a_client_that_does_not_trust_the_ca_is_refused(
    https_gateway: Gateway, tmp_path: Path
) -> None:
    stranger = ThrowawayCa.create(tmp_path / "stranger", "Someone else's CA")

    with https_gateway.client(verify=trusting(stranger.cert)) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get("/healthz")


def test_plaintext_on_all_interfaces_exits_2_saying_why(tmp_path: Path) -> None:
    # The check runs before uvicorn binds: nothing is ever exposed.
    port = free_port()

    done = subprocess.run(
        [str(BIN / "runmesh-gateway"), "serve", "--listen", f"0.0.0.0:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2
    assert f"refusing to serve plaintext HTTP on 0.0.0.0:{port}" in done.stderr
    assert "API keys would cross the network in the clear" in done.stderr
    assert "Give --tls-cert and --tls-key, or --insecure" in done.stderr
    assert "Traceback" not in done.stderr


# ---- gateway → coordinator ----


@pytest.fixture(scope="module")
def tls_coordinator(workdir: Path, ca: ThrowawayCa) -> Iterator[Coordinator]:
    issued = ca.issue(
        workdir / "coordinator", dns_names=("localhost", "coordinator.test")
    )
    flags = ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    coordinator = start_coordinator(workdir, extra=flags)
    try:
        yield coordinator
    finally:
        coordinator.stop()


@pytest.fixture(scope="module")
def admin_key(tls_coordinator: Coordinator) -> str:
    return create_key(tls_coordinator.db_url)


def _list_nodes(gateway: Gateway, key: str) -> httpx.Response:
    try:
        with gateway.client() as client:
            return client.get("/v1/runmesh/nodes", headers={"X-API-Key": key})
    finally:
        gateway.stop()


def test_a_gateway_trusting_the_coordinators_ca_reaches_it_over_tls(
    tmp_path: Path, ca: ThrowawayCa, tls_coordinator: Coordinator, admin_key: str
) -> None:
    gateway = start_gateway(
        tmp_path, tls_coordinator.target, ["--coordinator-ca", str(ca.cert)]
    )

    response = _list_nodes(gateway, admin_key)

    assert response.status_code == 200, response.text
    assert response.json()["data"] == []
    assert "over TLS trusting a CA file" in gateway.service.log()


def test_a_gateway_trusting_another_ca_answers_503_unavailable(
    tmp_path: Path, tls_coordinator: Coordinator, admin_key: str
) -> None:
    stranger = ThrowawayCa.create(tmp_path / "stranger", "Someone else's CA")
    gateway = start_gateway(
        tmp_path,
        tls_coordinator.target,
        ["--coordinator-ca", str(stranger.cert), "--deadline", "3"],
    )

    response = _list_nodes(gateway, admin_key)

    assert_error(response, 503, "unavailable")


def test_a_plaintext_gateway_cannot_talk_to_a_tls_coordinator(
    tmp_path: Path, tls_coordinator: Coordinator, admin_key: str
) -> None:
    gateway = start_gateway(tmp_path, tls_coordinator.target, ["--deadline", "3"])

    response = _list_nodes(gateway, admin_key)

    assert_error(response, 503, "unavailable")


@pytest.mark.parametrize(
    ("server_name", "status"), [("coordinator.test", 200), ("other.test", 503)]
)
def test_the_server_name_override_is_the_name_checked(
    tmp_path: Path,
    ca: ThrowawayCa,
    tls_coordinator: Coordinator,
    admin_key: str,
    server_name: str,
    status: int,
) -> None:
    gateway = start_gateway(
        tmp_path,
        tls_coordinator.target,
        [
            "--coordinator-ca",
            str(ca.cert),
            "--coordinator-server-name",
            server_name,
            "--deadline",
            "3",
        ],
    )

    response = _list_nodes(gateway, admin_key)

    assert response.status_code == status, response.text

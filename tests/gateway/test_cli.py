"""The ``runmesh-gateway`` command line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from support.pki import ThrowawayCa

from gateway import cli
from gateway.coordinator import PLAINTEXT, ChannelSecurity


@pytest.fixture(autouse=True)
def _keep_the_log_setup() -> Iterator[None]:
    # ``serve`` configures the root logger with CliRunner's stderr, which is
    # closed once the command returns; later tests must not write to it.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """uvicorn.run replaced: what it was called with, and nothing bound."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    return seen


def test_help_says_what_each_command_does() -> None:
    runner = CliRunner()

    top = runner.invoke(cli.main, ["--help"])
    serve = runner.invoke(cli.main, ["serve", "--help"])

    assert top.exit_code == 0 and "REST gateway" in top.output
    assert serve.exit_code == 0 and "Serve the REST API" in serve.output
    for flag in (
        "--coordinator",
        "--listen",
        "--log-level",
        "RUNMESH_COORDINATOR",
        "RUNMESH_GATEWAY_LISTEN",
    ):
        assert flag in serve.output


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--listen", "8080"],
        ["serve", "--coordinator", "host:port"],
        ["serve", "--listen", "127.0.0.1:70000"],
        ["serve", "--log-level", "loud"],
        ["serve", "--no-such-flag"],
    ],
)
def test_bad_flags_are_a_usage_error_not_a_traceback(args: list[str]) -> None:
    result = CliRunner().invoke(cli.main, args)

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Error" in result.output


def test_serve_passes_the_addresses_to_uvicorn(no_server: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        cli.main,
        ["serve", "--listen", "[::1]:9090", "--log-level", "WARNING"],
        env={"RUNMESH_COORDINATOR": "10.1.2.3:50443"},
    )

    assert result.exit_code == 0, result.output
    assert no_server == {
        "host": "::1",
        "port": 9090,
        "ssl_certfile": None,
        "ssl_keyfile": None,
        "log_level": "warning",
        # runmesh.logs owns the set-up; gateway.access writes the access line.
        "log_config": None,
        "access_log": False,
    }


def test_defaults_are_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    targets: list[str] = []
    monkeypatch.setattr(cli, "create_app", lambda target, **_: targets.append(target))
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kwargs: None)

    result = CliRunner().invoke(cli.main, ["serve"], env={})

    assert result.exit_code == 0, result.output
    assert targets == ["127.0.0.1:50443"]


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name", ["main", "serve"])
def test_help_lists_every_option_with_its_env_var_and_default(name: str) -> None:
    command = cli.main if name == "main" else cli.serve
    ctx = click.Context(command, info_name=name)
    output = (
        CliRunner()
        .invoke(cli.main, ["--help"] if name == "main" else ["serve", "--help"])
        .output
    )

    for option in _options(command):
        if option.name == "help":
            continue
        record = option.get_help_record(ctx)
        assert record is not None, option.name
        assert option.opts[0] in output
        assert f"env var: {option.envvar}" in record[1], option.name
        assert "default:" in record[1], option.name


def test_the_gateway_flags_read_their_documented_env_vars() -> None:
    envvars = {option.name: option.envvar for option in _options(cli.serve)}

    assert envvars["tls_cert"] == "RUNMESH_GATEWAY_TLS_CERT"
    assert envvars["tls_key"] == "RUNMESH_GATEWAY_TLS_KEY"
    assert envvars["insecure"] == "RUNMESH_INSECURE"
    assert envvars["coordinator_ca"] == "RUNMESH_COORDINATOR_CA"
    assert envvars["coordinator_tls"] == "RUNMESH_COORDINATOR_TLS"
    assert envvars["log_format"] == "RUNMESH_LOG_FORMAT"


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.0.2.10", "gateway.example"])
def test_plaintext_off_loopback_is_refused_before_anything_binds(
    no_server: dict[str, Any], host: str
) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--listen", f"{host}:8080"])

    assert result.exit_code == 2
    assert "refusing to serve plaintext HTTP" in result.output
    assert "API keys would cross the network in the clear" in result.output
    assert "--tls-cert and --tls-key, or --insecure" in result.output
    assert no_server == {}


def test_insecure_allows_plaintext_off_loopback(no_server: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        cli.main,
        ["serve", "--listen", "0.0.0.0:8080"],
        env={"RUNMESH_INSECURE": "1"},
    )

    assert result.exit_code == 0, result.output
    assert (no_server["host"], no_server["ssl_certfile"]) == ("0.0.0.0", None)


def test_tls_files_go_to_uvicorn_and_allow_any_address(
    no_server: dict[str, Any], tmp_path: Path
) -> None:
    issued = ThrowawayCa.create(tmp_path).issue(tmp_path / "server")

    result = CliRunner().invoke(
        cli.main,
        ["serve", "--listen", "0.0.0.0:8443"],
        env={
            "RUNMESH_GATEWAY_TLS_CERT": str(issued.cert),
            "RUNMESH_GATEWAY_TLS_KEY": str(issued.key),
        },
    )

    assert result.exit_code == 0, result.output
    assert no_server["ssl_certfile"] == str(issued.cert)
    assert no_server["ssl_keyfile"] == str(issued.key)


def test_a_certificate_without_its_key_is_refused(
    no_server: dict[str, Any], tmp_path: Path
) -> None:
    issued = ThrowawayCa.create(tmp_path).issue(tmp_path / "server")

    result = CliRunner().invoke(cli.main, ["serve", "--tls-cert", str(issued.cert)])

    assert result.exit_code == 2
    assert "--tls-cert and --tls-key must be given together" in result.output
    assert no_server == {}


def test_a_key_of_another_certificate_is_one_line_not_a_traceback(
    no_server: dict[str, Any], tmp_path: Path
) -> None:
    ca = ThrowawayCa.create(tmp_path)
    first, second = ca.issue(tmp_path / "a"), ca.issue(tmp_path / "b")

    result = CliRunner().invoke(
        cli.main,
        ["serve", "--tls-cert", str(first.cert), "--tls-key", str(second.key)],
    )

    assert result.exit_code == 2
    assert "cannot use the TLS files" in result.output
    assert "Traceback" not in result.output
    assert no_server == {}


@pytest.fixture
def channel_security(monkeypatch: pytest.MonkeyPatch) -> list[ChannelSecurity]:
    seen: list[ChannelSecurity] = []

    def fake_create_app(target: str, **kwargs: Any) -> None:
        seen.append(kwargs["security"])

    monkeypatch.setattr(cli, "create_app", fake_create_app)
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kwargs: None)
    return seen


def test_the_coordinator_is_reached_in_plaintext_by_default(
    channel_security: list[ChannelSecurity],
) -> None:
    result = CliRunner().invoke(cli.main, ["serve"], env={})

    assert result.exit_code == 0, result.output
    assert channel_security == [PLAINTEXT]


def test_a_coordinator_ca_implies_tls_and_trusts_that_ca(
    channel_security: list[ChannelSecurity], tmp_path: Path
) -> None:
    ca = ThrowawayCa.create(tmp_path)

    result = CliRunner().invoke(
        cli.main,
        ["serve", "--coordinator-server-name", "coordinator.test"],
        env={"RUNMESH_COORDINATOR_CA": str(ca.cert)},
    )

    assert result.exit_code == 0, result.output
    assert channel_security == [
        ChannelSecurity(
            tls=True,
            root_certificates=ca.cert.read_bytes(),
            server_name="coordinator.test",
        )
    ]


def test_coordinator_tls_uses_the_system_roots(
    channel_security: list[ChannelSecurity],
) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--coordinator-tls"])

    assert result.exit_code == 0, result.output
    assert channel_security == [ChannelSecurity(tls=True)]


def test_a_server_name_without_tls_is_a_usage_error(
    channel_security: list[ChannelSecurity],
) -> None:
    result = CliRunner().invoke(
        cli.main, ["serve", "--coordinator-server-name", "coordinator.test"]
    )

    assert result.exit_code == 2
    assert "needs --coordinator-ca or --coordinator-tls" in result.output
    assert channel_security == []


def test_a_coordinator_ca_that_holds_no_certificate_is_a_usage_error(
    channel_security: list[ChannelSecurity], tmp_path: Path
) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")

    result = CliRunner().invoke(cli.main, ["serve", "--coordinator-ca", str(junk)])

    assert result.exit_code == 2
    assert "cannot use" in result.output and "as CA certificates" in result.output
    assert "Traceback" not in result.output

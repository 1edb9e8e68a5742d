"""The ``runmesh-gateway`` command line."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from gateway import cli


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


def test_serve_passes_the_addresses_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))

    result = CliRunner().invoke(
        cli.main,
        ["serve", "--listen", "[::1]:9090", "--log-level", "WARNING"],
        env={"RUNMESH_COORDINATOR": "10.1.2.3:50443"},
    )

    assert result.exit_code == 0, result.output
    assert seen == {"host": "::1", "port": 9090, "log_level": "warning"}


def test_defaults_are_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    targets: list[str] = []
    monkeypatch.setattr(cli, "create_app", lambda target, **_: targets.append(target))
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kwargs: None)

    result = CliRunner().invoke(cli.main, ["serve"], env={})

    assert result.exit_code == 0, result.output
    assert targets == ["127.0.0.1:50443"]

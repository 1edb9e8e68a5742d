"""`meshd --help` and each command's help, as the installed script prints them."""

from __future__ import annotations

import click
import pytest
from conftest import run_meshd

from meshd.cli import main

COMMANDS = sorted(main.commands)


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


def _env_vars(option: click.Option) -> list[str]:
    envvar = option.envvar
    if envvar is None:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


def test_the_top_level_help_lists_every_command_and_the_log_level() -> None:
    result = run_meshd("--help")

    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout
    assert "RUNMESH_LOG_LEVEL" in result.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_help_shows_every_option_with_its_env_var(name: str) -> None:
    command = main.commands[name]

    result = run_meshd(name, "--help")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stdout.split())  # as wrapped to the terminal
    for option in _options(command):
        assert option.opts[0] in text
        for envvar in _env_vars(option):
            assert f"env var: {envvar}" in text, option.name


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_every_option_has_help_and_shows_its_default(name: str | None) -> None:
    command = main if name is None else main.commands[name]

    for option in _options(command):
        assert option.help, f"{command.name} {option.opts[0]} has no help"
        if _env_vars(option):
            assert option.show_envvar, f"{option.opts[0]} hides its env var"
        # A required option, a flag or a list has no default worth printing.
        plain = not (option.required or option.is_flag or option.multiple)
        if plain and option.default is not None or option.opts[0] == "--wireguard-log":
            assert option.show_default, f"{option.opts[0]} hides its default"


def test_the_defaults_an_operator_asks_about_are_printed() -> None:
    up = " ".join(run_meshd("up", "--help").stdout.split())
    down = " ".join(run_meshd("down", "--help").stdout.split())

    assert "default: 1420" in up
    assert "default: 51820" in up
    assert "/var/log/runmesh" in up
    assert "default: runmesh0" in down

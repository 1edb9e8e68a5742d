"""No command-line option of the three programs takes NaN for a number.

click parses "nan" as a float and NaN compares false with both bounds of a
FloatRange; ``runmesh-coordinator serve --keepalive nan`` once started a
coordinator whose streams never sent a keepalive nor reached a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from coordinator import cli as coordinator_cli
from gateway import cli as gateway_cli
from meshd import cli as meshd_cli
from runmesh.options import FiniteFloatRange

PROGRAMS = {
    "runmesh-coordinator": coordinator_cli.main,
    "runmesh-gateway": gateway_cli.main,
    "meshd": meshd_cli.main,
}


def commands(name: str, command: click.Command) -> Iterator[tuple[str, click.Command]]:
    yield name, command
    if isinstance(command, click.Group):
        for sub, child in command.commands.items():
            yield from commands(f"{name} {sub}", child)


def float_options() -> Iterator[tuple[str, click.Option]]:
    for program, group in PROGRAMS.items():
        for name, command in commands(program, group):
            for param in command.params:
                if isinstance(param, click.Option) and isinstance(
                    param.type, click.FloatRange
                ):
                    yield f"{name} {param.opts[0]}", param


def test_every_float_option_refuses_nan() -> None:
    found = list(float_options())
    assert len(found) >= 8
    for where, option in found:
        assert isinstance(option.type, FiniteFloatRange), where
        for text in ("nan", "NaN", "-nan"):
            with pytest.raises(click.BadParameter, match="is not a number"):
                option.type.convert(text, option, None)


def test_serve_with_keepalive_nan_exits_with_a_usage_error() -> None:
    result = CliRunner().invoke(
        coordinator_cli.main, ["serve", "--keepalive", "nan"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert "'nan' is not a number" in result.output

"""The service files run commands that exist, with flags the commands take."""

from __future__ import annotations

import plistlib
import shlex
import subprocess
from pathlib import Path

import pytest
from support.processes import BIN

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "packaging" / "systemd").glob("*.service"))


def _commands(unit: Path) -> list[list[str]]:
    commands = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ExecStart", "ExecStartPre"):
            argv = shlex.split(value.lstrip("-+!@"))
            argv[0] = str(BIN / Path(argv[0]).name)
            commands.append(argv)
    return commands


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_every_command_of_a_unit_file_is_one_the_programs_accept(unit: Path) -> None:
    commands = _commands(unit)
    assert commands, f"{unit.name} starts nothing"
    for argv in commands:
        # --help parses the command path and exits 0 only if it exists.
        done = subprocess.run(
            [*argv, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{unit.name}: {argv}: {done.stderr}"


def test_the_launchd_property_list_parses_and_runs_meshd_up() -> None:
    plists = list((ROOT / "packaging" / "launchd").glob("*.plist"))
    assert plists
    for path in plists:
        with path.open("rb") as handle:
            job = plistlib.load(handle)
        assert job["ProgramArguments"][1] == "up"

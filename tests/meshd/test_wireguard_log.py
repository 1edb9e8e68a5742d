"""Where wireguard-go's output goes, and that nobody else can redirect it.

meshd runs as root and appends to the log, so a symbolic link or a FIFO
planted at the log path, or a log directory someone else can write to,
must be refused rather than followed. The backend is pointed at a fake
wireguard-go that exits at once: these tests never start a data plane.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest
from conftest import run_meshd
from support.prerequisites import require

from meshd.wireguard.userspace import UserspaceBackend, WireGuardGoError

pytestmark = pytest.mark.anyio

ADDRESSES = ["100.64.0.7/16"]


@pytest.fixture
def fake_wireguard_go(tmp_path: Path) -> str:
    fake = tmp_path / "fake-wireguard-go"
    fake.write_text("#!/bin/sh\necho 'fake wireguard-go ran' >&2\nexit 3\n")
    fake.chmod(0o755)
    return str(fake)


def _interface() -> str:
    return f"rml{secrets.token_hex(4)}"


async def test_the_log_is_created_private_and_appended_to(
    tmp_path: Path, fake_wireguard_go: str
) -> None:
    log = tmp_path / "wg.log"
    log.write_text("earlier run\n")
    log.chmod(0o600)
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_path=log)

    with pytest.raises(WireGuardGoError, match="exit status 3.*fake wireguard-go ran"):
        await backend.start(_interface(), ADDRESSES, 1420)

    assert log.read_text() == "earlier run\nfake wireguard-go ran\n"
    fresh = tmp_path / "fresh.log"
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_path=fresh)
    with pytest.raises(WireGuardGoError):
        await backend.start(_interface(), ADDRESSES, 1420)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


async def test_a_symlink_planted_at_the_log_path_is_not_followed(
    tmp_path: Path, fake_wireguard_go: str
) -> None:
    victim = tmp_path / "victim"
    planted = tmp_path / "wg.log"
    planted.symlink_to(victim)
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_path=planted)

    with pytest.raises(WireGuardGoError, match="symbolic link"):
        await backend.start(_interface(), ADDRESSES, 1420)

    assert not victim.exists()


async def test_a_fifo_planted_at_the_log_path_is_refused_without_hanging(
    tmp_path: Path, fake_wireguard_go: str
) -> None:
    planted = tmp_path / "wg.log"
    os.mkfifo(planted)
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_path=planted)

    with pytest.raises(WireGuardGoError, match=str(planted)):
        await backend.start(_interface(), ADDRESSES, 1420)


async def test_the_default_log_directory_is_created_owner_only(
    tmp_path: Path, fake_wireguard_go: str
) -> None:
    log_dir = tmp_path / "runmesh-logs"
    interface = _interface()
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_dir=log_dir)

    with pytest.raises(WireGuardGoError, match="exit status 3"):
        await backend.start(interface, ADDRESSES, 1420)

    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    log = log_dir / f"wireguard-go-{interface}.log"
    assert log.read_text() == "fake wireguard-go ran\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
async def test_a_log_directory_others_can_write_to_is_refused(
    tmp_path: Path, fake_wireguard_go: str, mode: int
) -> None:
    log_dir = tmp_path / "runmesh-logs"
    log_dir.mkdir()
    log_dir.chmod(mode)
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_dir=log_dir)

    with pytest.raises(WireGuardGoError, match="writable by group or others"):
        await backend.start(_interface(), ADDRESSES, 1420)

    assert list(log_dir.iterdir()) == []


async def test_a_log_directory_owned_by_another_user_is_refused(
    tmp_path: Path, fake_wireguard_go: str
) -> None:
    require(os.geteuid() == 0, "needs root to give a directory to another user")
    log_dir = tmp_path / "runmesh-logs"
    log_dir.mkdir(mode=0o700)
    os.chown(log_dir, 65534, 65534)
    backend = UserspaceBackend(wireguard_go=fake_wireguard_go, log_dir=log_dir)

    with pytest.raises(WireGuardGoError, match="owned by uid 65534, not by root"):
        await backend.start(_interface(), ADDRESSES, 1420)

    assert list(log_dir.iterdir()) == []


async def test_a_log_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    log_dir = tmp_path / "runmesh-logs"
    log_dir.write_text("")
    backend = UserspaceBackend(log_dir=log_dir)

    with pytest.raises(WireGuardGoError, match="is not a directory"):
        await backend.start(_interface(), ADDRESSES, 1420)


@pytest.mark.parametrize("via", ["flag", "env"])
def test_meshd_up_refuses_a_symlinked_wireguard_log(
    via: str, tmp_path: Path, linked_state_dir: Path, fake_wireguard_go: str
) -> None:
    # The saved map makes `up` start the device at once, before any
    # coordinator answers, so the log is opened (and refused) straight away.
    # Should it be followed after all, only the fake wireguard-go runs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wireguard-go").symlink_to(fake_wireguard_go)
    victim = tmp_path / "victim"
    planted = tmp_path / "wg.log"
    planted.symlink_to(victim)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    if via == "env":
        env["RUNMESH_WIREGUARD_LOG"] = str(planted)
    args = ["up", "--state-dir", str(linked_state_dir), "--interface", _interface()]
    if via == "flag":
        args += ["--wireguard-log", str(planted)]

    result = run_meshd(*args, env=env)

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 5, result.stderr
    assert f"{planted}: it is a symbolic link" in result.stderr
    assert not victim.exists()

"""Every meshd command, run as the installed script, against hostile input.

Whatever an operator (or another user on the host) puts on the command line
or in the state directory, meshd ends with a message that names the
problem and a non-zero status, never with a Python traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import COORDINATOR_PUBLIC_KEY, run_meshd

BAD_INTERFACES = ["bad/name", "a" * 16, "", ".", "..", "has space", "tab\there"]
BAD_COORDINATORS = ["", "nohost", "host:99999", "host:0", "host:", ":50443"]
BAD_COORDINATORS += ["[not-v6]:1", "::1:50443", "a b:1", "dns:///x:1"]


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], *named: str, code: int | None = None
) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode != 0, result.stdout + result.stderr
    if code is not None:
        assert result.returncode == code, result.stderr
    for word in named:
        assert word.lower() in result.stderr.lower(), result.stderr


# ---- hostile arguments ----


@pytest.mark.parametrize("name", BAD_INTERFACES)
@pytest.mark.parametrize("command", ["up", "down"])
def test_a_bad_interface_name_is_a_usage_error(
    command: str, name: str, linked_state_dir: Path
) -> None:
    args = [command, "--interface", name]
    if command == "up":
        args += ["--state-dir", str(linked_state_dir)]

    result = run_meshd(*args)

    assert_clean_failure(result, "--interface", code=2)


def test_a_bad_interface_name_from_the_environment_is_a_usage_error() -> None:
    result = run_meshd("down", env={"RUNMESH_INTERFACE": "x/../../etc"})

    assert_clean_failure(result, "RUNMESH_INTERFACE", code=2)


@pytest.mark.parametrize("target", BAD_COORDINATORS)
@pytest.mark.parametrize("command", ["link", "up"])
def test_a_bad_coordinator_address_is_a_usage_error(
    command: str, target: str, linked_state_dir: Path
) -> None:
    result = run_meshd(
        command, "--coordinator", target, "--state-dir", str(linked_state_dir)
    )

    assert_clean_failure(result, "--coordinator", code=2)
    assert "grpc" not in result.stderr.lower()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["up", "--mtu", "100"], "--mtu"),
        (["up", "--listen-port", "0"], "--listen-port"),
        (["up", "--listen-port", "port"], "--listen-port"),
        (["up", "--reconcile-interval", "0"], "--reconcile-interval"),
        (["up", "--backend", "bogus"], "--backend"),
        (["--log-level", "loud", "status"], "--log-level"),
        (["status", "--no-such-flag"], "--no-such-flag"),
        (["no-such-command"], "no-such-command"),
        (["link"], "--coordinator"),
    ],
)
def test_bad_flags_are_a_usage_error(args: list[str], named: str) -> None:
    assert_clean_failure(run_meshd(*args), named, code=2)


# ---- hostile state directories ----

StateBreaker = Callable[[Path], None]


def _write(name: str, content: bytes, mode: int = 0o600) -> StateBreaker:
    def breaker(state_dir: Path) -> None:
        path = state_dir / name
        path.unlink(missing_ok=True)
        path.write_bytes(content)
        path.chmod(mode)

    return breaker


def _replace_with_dir(name: str) -> StateBreaker:
    def breaker(state_dir: Path) -> None:
        (state_dir / name).unlink()
        (state_dir / name).mkdir()

    return breaker


def _replace_with_fifo(name: str) -> StateBreaker:
    def breaker(state_dir: Path) -> None:
        (state_dir / name).unlink()
        os.mkfifo(state_dir / name, 0o600)

    return breaker


def _remove(name: str) -> StateBreaker:
    def breaker(state_dir: Path) -> None:
        (state_dir / name).unlink()

    return breaker


def _chmod(name: str, mode: int) -> StateBreaker:
    def breaker(state_dir: Path) -> None:
        (state_dir / name).chmod(mode)

    return breaker


def _edit_identity(field: str, value: object) -> StateBreaker:
    def breaker(state_dir: Path) -> None:
        path = state_dir / "node.json"
        text = path.read_text().replace(
            f'"{field}": ', f'"{field}": {json.dumps(value)}, "was": ', 1
        )
        path.write_text(text)

    return breaker


BROKEN_KEYS: dict[str, StateBreaker] = {
    "key-missing": _remove("private.key"),
    "key-not-utf8": _write("private.key", b"\xff\xfe\x80garbage\n"),
    "key-empty": _write("private.key", b""),
    "key-too-short": _write("private.key", b"AQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"),
    "key-too-long": _write("private.key", (COORDINATOR_PUBLIC_KEY * 2).encode()),
    "key-not-base64": _write("private.key", b"!" * 43 + b"=\n"),
    "key-mode-0644": _chmod("private.key", 0o644),
    "key-is-a-dir": _replace_with_dir("private.key"),
    "key-is-a-fifo": _replace_with_fifo("private.key"),
}

BROKEN_IDENTITIES: dict[str, StateBreaker] = {
    "node-missing": _remove("node.json"),
    "node-truncated": _write("node.json", b'{"node_id": "node-1", "org'),
    "node-not-utf8": _write("node.json", b'{"name": "\xff\xfe"}'),
    "node-binary": _write("node.json", bytes(range(256))),
    "node-empty": _write("node.json", b""),
    "node-array": _write("node.json", b"[1, 2, 3]"),
    "node-deeply-nested": _write("node.json", b"[" * 200_000),
    "node-huge-number": _write("node.json", b"1" * 10_000),
    "node-missing-fields": _write("node.json", b'{"node_id": "node-1"}'),
    "node-bad-public-key": _edit_identity("public_key", "not-a-key"),
    "node-name-not-a-string": _edit_identity("name", {"nested": [1]}),
    "node-bad-coordinator": _edit_identity("coordinator_target", "nohost"),
    "node-bad-ipv4": _edit_identity("ipv4", "300.1.2.3"),
    "node-is-a-dir": _replace_with_dir("node.json"),
    "node-is-a-fifo": _replace_with_fifo("node.json"),
    "revoked-note-not-utf8": _write("REVOKED", b"\xff\xfe revoked by admin"),
}

BROKEN_NAMES = {
    "key": "private.key",
    "node": "node.json",
    "revoked": "revoked",
}


def _named_in_message(case: str) -> str:
    return BROKEN_NAMES[case.split("-")[0]]


def _command(name: str, state_dir: Path) -> list[str]:
    # `up` never gets as far as WireGuard: the state is read first.
    return {
        "status": ["status", "--state-dir", str(state_dir)],
        "status --json": ["status", "--json", "--state-dir", str(state_dir)],
        "up": ["up", "--state-dir", str(state_dir), "--interface", "rmhostile0"],
    }[name]


@pytest.mark.parametrize("command", ["status", "up"])
@pytest.mark.parametrize("case", sorted(BROKEN_IDENTITIES))
def test_a_broken_identity_is_named_not_a_traceback(
    case: str, command: str, linked_state_dir: Path
) -> None:
    BROKEN_IDENTITIES[case](linked_state_dir)

    result = run_meshd(*_command(command, linked_state_dir))

    assert_clean_failure(result, _named_in_message(case))


@pytest.mark.parametrize("case", sorted(BROKEN_KEYS))
def test_up_names_a_broken_key_not_a_traceback(
    case: str, linked_state_dir: Path
) -> None:
    BROKEN_KEYS[case](linked_state_dir)

    result = run_meshd(*_command("up", linked_state_dir))

    assert_clean_failure(result, "private.key")


@pytest.mark.parametrize(
    "case", sorted(set(BROKEN_KEYS) - {"key-missing"}) + ["revoked-note-not-utf8"]
)
def test_link_refuses_a_broken_key_before_calling_the_coordinator(
    case: str, linked_state_dir: Path, unreachable_coordinator: str
) -> None:
    # A missing key is not broken: link creates one.
    {**BROKEN_KEYS, **BROKEN_IDENTITIES}[case](linked_state_dir)

    result = run_meshd(
        "link",
        "--coordinator",
        unreachable_coordinator,
        "--state-dir",
        str(linked_state_dir),
    )

    assert_clean_failure(result, _named_in_message(case))
    assert "cannot reach the coordinator" not in result.stderr


def test_link_with_nothing_listening_says_so(
    tmp_path: Path, unreachable_coordinator: str
) -> None:
    result = run_meshd(
        "link",
        "--coordinator",
        unreachable_coordinator,
        "--state-dir",
        str(tmp_path / "new"),
    )

    assert_clean_failure(
        result, f"cannot reach the coordinator at {unreachable_coordinator}"
    )


@pytest.mark.parametrize("command", ["status", "up", "link"])
def test_a_state_dir_that_is_a_file_is_refused(
    command: str, tmp_path: Path, unreachable_coordinator: str
) -> None:
    state_file = tmp_path / "state"
    state_file.write_text("not a directory\n")
    args = [command, "--state-dir", str(state_file)]
    if command == "link":
        args += ["--coordinator", unreachable_coordinator]

    result = run_meshd(*args)

    assert_clean_failure(result, "--state-dir", str(state_file), code=2)


@pytest.mark.parametrize("command", ["status", "up", "link"])
def test_a_state_dir_under_a_file_is_refused(
    command: str, tmp_path: Path, unreachable_coordinator: str
) -> None:
    (tmp_path / "file").write_text("")
    state_dir = tmp_path / "file" / "state"
    args = [command, "--state-dir", str(state_dir)]
    if command == "link":
        args += ["--coordinator", unreachable_coordinator]

    result = run_meshd(*args)

    assert_clean_failure(result, "not a directory")


@pytest.mark.parametrize("command", ["status", "up"])
def test_a_missing_state_dir_says_to_link_first(command: str, tmp_path: Path) -> None:
    result = run_meshd(command, "--state-dir", str(tmp_path / "absent"))

    assert_clean_failure(result, "node.json does not exist", "meshd link")


@pytest.mark.parametrize(
    ("command", "unreadable"),
    # Each command with each file it reads before it touches the network
    # or WireGuard ("." is the directory itself).
    [
        ("status", "."),
        ("status", "node.json"),
        ("status", "map.json"),
        ("up", "."),
        ("up", "node.json"),
        ("up", "private.key"),
        ("link", "."),
        ("link", "private.key"),
    ],
)
def test_an_unreadable_state_file_is_named(
    command: str, unreadable: str, linked_state_dir: Path, unreachable_coordinator: str
) -> None:
    target = (linked_state_dir / unreadable).resolve()
    target.chmod(0o000)
    args = [command, "--state-dir", str(linked_state_dir)]
    if command == "link":
        args += ["--coordinator", unreachable_coordinator]

    try:
        result = run_meshd(*args, obey_file_modes=True)
    finally:
        target.chmod(0o700)

    assert_clean_failure(result, str(target))
    assert "not readable" in result.stderr or "Permission denied" in result.stderr


# ---- the saved map is a cache: a broken one is dropped, loudly ----

BROKEN_MAPS: dict[str, StateBreaker] = {
    "truncated": _write("map.json", b'{"version": 3, "addre'),
    "not-utf8": _write("map.json", b"\xff\xfe\x00\x01"),
    "array": _write("map.json", b"[]"),
    "deeply-nested": _write("map.json", b'{"a":' * 100_000),
    "bad-address": _write(
        "map.json", b'{"version": 1, "addresses": ["nope"], "name": "", "peers": {}}'
    ),
    "peers-not-objects": _write(
        "map.json", b'{"version": 1, "addresses": [], "name": "", "peers": {"a": 1}}'
    ),
}
# Regression: 1e999 and Infinity crashed `meshd status` with OverflowError,
# and saved peers were formatted unchecked (TypeError).
_VERSIONS = {
    "version-1e999": b"1e999",
    "version-infinity": b"Infinity",
    "version-nan": b"NaN",
    "version-fraction": b"7.9",
    "version-true": b"true",
    "version-negative": b"-3",
    "version-too-big": b"18446744073709551616",
}
_PEERS = {
    "allowed-ips-numbers": b'{"publicKey": "k", "allowedIps": [1, 2]}',
    "allowed-ips-a-string": b'{"publicKey": "k", "allowedIps": "abc"}',
    "peer-unknown-field": b'{"publicKey": "k", "colour": "red"}',
}
for _name, (_version, _peers) in {
    **{name: (v, b"{}") for name, v in _VERSIONS.items()},
    **{name: (b"1", b'{"k": ' + p + b"}") for name, p in _PEERS.items()},
}.items():
    BROKEN_MAPS[_name] = _write(
        "map.json",
        b'{"version": ' + _version + b', "addresses": [], "name": "", '
        b'"peers": ' + _peers + b"}",
    )


@pytest.mark.parametrize("case", sorted(BROKEN_MAPS))
def test_a_broken_saved_map_is_dropped_with_a_warning(
    case: str, linked_state_dir: Path
) -> None:
    BROKEN_MAPS[case](linked_state_dir)

    result = run_meshd("status", "--state-dir", str(linked_state_dir))

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert "map.json" in result.stderr and "dropping it" in result.stderr
    assert "version  0" in result.stdout
    assert not (linked_state_dir / "map.json").exists()


def test_status_json_names_a_broken_identity(linked_state_dir: Path) -> None:
    BROKEN_IDENTITIES["node-not-utf8"](linked_state_dir)

    result = run_meshd(*_command("status --json", linked_state_dir))

    assert_clean_failure(result, "node.json is not UTF-8", code=2)
    assert result.stdout == ""


def test_a_saved_map_that_is_a_directory_is_an_error(linked_state_dir: Path) -> None:
    _replace_with_dir("map.json")(linked_state_dir)

    result = run_meshd("status", "--state-dir", str(linked_state_dir))

    assert_clean_failure(result, "map.json", code=2)


def test_an_intact_state_dir_is_reported(linked_state_dir: Path) -> None:
    # The control for every case above: the fixture itself is not broken.
    result = run_meshd("status", "--state-dir", str(linked_state_dir))

    assert result.returncode == 0, result.stderr
    assert "laptop (node-1)" in result.stdout
    assert "version  3" in result.stdout


@pytest.mark.parametrize("status_json", [None, "{}", '{"interface": null}'])
def test_status_without_an_interface_reads_the_default_one(
    linked_state_dir: Path, status_json: str | None
) -> None:
    # Regression: with no interface named anywhere, status read "None".
    if status_json is not None:
        (linked_state_dir / "status.json").write_text(status_json)

    result = run_meshd("status", "--state-dir", str(linked_state_dir))

    assert result.returncode == 0, result.stderr
    assert "runmesh0 (userspace)" in result.stdout
    assert "None" not in result.stdout

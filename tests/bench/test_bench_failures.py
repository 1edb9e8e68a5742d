"""A benchmark whose server dies, or that is interrupted, ends promptly
with one line saying why, and leaves nothing running.

Regression: a floor server or the coordinator killed between rounds made
``bench.fanout`` wait forever for a connection (``channel_ready()`` has no
deadline of its own); a failed call or Ctrl-C ended in a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--nodes", "4", "--workers", "2", "--rounds", "4", "--hold", "0"]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (servers run in their own sessions)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def command_of(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ").decode()
    except OSError:
        return ""


def start_fanout() -> subprocess.Popen[str]:
    """A small bench.fanout, its stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fanout", *SMALL],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_until(line: str, act: object) -> tuple[subprocess.Popen[str], str, float]:
    """Start bench.fanout; once ``line`` is in its stderr call ``act(proc)``;
    returns the process, all of its stderr and seconds from act to exit."""
    proc = start_fanout()
    assert proc.stderr is not None
    seen = []
    try:
        for text in proc.stderr:
            seen.append(text)
            if line in text:
                act(proc)  # type: ignore[operator]
                break
        acted = time.monotonic()
        seen.append(proc.stderr.read())
        proc.wait(timeout=120)
        return proc, "".join(seen), time.monotonic() - acted
    finally:
        if proc.poll() is None:  # the test failed: leave nothing behind
            for child in descendants(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait()


def kill_child(matching: str):  # type: ignore[no-untyped-def]
    def act(proc: subprocess.Popen[str]) -> None:
        victims = [p for p in descendants(proc.pid) if matching in command_of(p)]
        assert victims, f"no child process runs {matching!r}"
        os.kill(victims[0], signal.SIGKILL)
        act.children = descendants(proc.pid)  # type: ignore[attr-defined]

    return act


def assert_nothing_left(children: set[int]) -> None:
    time.sleep(0.5)
    alive = [p for p in children if Path(f"/proc/{p}").exists() and command_of(p)]
    assert not alive, [command_of(p) for p in alive]


def test_a_floor_server_that_dies_fails_the_run_in_words() -> None:
    act = kill_child("bench.floor")
    proc, said, took = run_until("round 1:", act)
    assert proc.returncode == 1, said
    assert "bench.fanout: failed: the floor server" in said, said
    assert "exited" in said
    assert "Traceback" not in said, said
    assert took < 60, took
    assert_nothing_left(act.children)  # type: ignore[attr-defined]


def test_a_coordinator_that_dies_fails_the_run_in_words() -> None:
    act = kill_child("runmesh-coordinator")
    proc, said, took = run_until("round 1:", act)
    assert proc.returncode == 1, said
    assert "bench.fanout: failed: the coordinator exited" in said, said
    assert "Traceback" not in said, said
    assert took < 60, took
    assert_nothing_left(act.children)  # type: ignore[attr-defined]


def test_an_interrupted_run_says_so_and_stops_everything() -> None:
    children: set[int] = set()

    def act(proc: subprocess.Popen[str]) -> None:
        children.update(descendants(proc.pid))
        proc.send_signal(signal.SIGTERM)

    proc, said, took = run_until("round 1:", act)
    assert proc.returncode == 130, said
    assert "bench.fanout: interrupted (signal 15); stopped what it started" in said
    assert "Traceback" not in said, said
    assert took < 30, took
    assert_nothing_left(children)


SWALLOWED = """
import os, signal, time
from bench import services

class Finaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # raised here, and ignored

with services.bench_run("probe"):
    Finaliser()
    print("went on", flush=True)
    for _ in range(50):
        services.check_interrupted()
        time.sleep(0.1)
    print("reached the end", flush=True)
"""


def test_an_interrupt_swallowed_by_a_finaliser_still_ends_the_run() -> None:
    """Regression: SIGTERM landing while grpc's channel finaliser joined a
    thread was printed as "Exception ignored" and the run went on to exit
    0; the next step between rounds now raises it again."""
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130, done
    assert "went on" in done.stdout and "reached the end" not in done.stdout
    assert "bench.probe: interrupted (signal 15)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_an_interrupt_while_the_coordinator_starts_stops_it_too() -> None:
    """Regression: the coordinator's clean-up was registered only once it was
    listening, so an interrupt during its start left it running."""
    proc = start_fanout()
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [
                p
                for p in descendants(proc.pid)
                # The server itself, not the `keys create` run before it.
                if "runmesh-coordinator" in command_of(p) and " serve " in command_of(p)
            ]
            if found:
                children.update(found)
                break
            time.sleep(0.005)
        assert children, "the coordinator never started"
        proc.send_signal(signal.SIGTERM)
        _, said = proc.communicate(timeout=60)
        assert proc.returncode == 130, said
        assert "interrupted (signal 15); stopped what it started" in said, said
        assert_nothing_left(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)

"""A benchmark's bad flag is a usage error naming the flag, given before
anything starts. Regression: ``--nodes 0`` waited 300 s and ended in a
traceback; ``--hold -1`` failed after the whole fleet was built;
``--workers 0`` divided by zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BAD = [
    ("fanout", ["--nodes", "0"], "--nodes: must be from 1 to"),
    ("fanout", ["--nodes", "-5"], "--nodes: must be from 1 to"),
    ("fanout", ["--nodes", "many"], "--nodes: 'many' is not a whole number"),
    ("fanout", ["--hold", "-1"], "--hold: must be from 0 to 86400 seconds"),
    ("fanout", ["--hold", "nan"], "--hold: 'nan' is not a number"),
    # time.sleep(1e10) overflows time_t after the whole fleet is built.
    ("fanout", ["--hold", "1e10"], "--hold: must be from 0 to 86400 seconds"),
    ("fanout", ["--workers", "\u0661\u0662"], "--workers: '\u0661\u0662' is not"),
    ("fanout", ["--nodes", "1_000"], "--nodes: '1_000' is not a whole number"),
    ("fanout", ["--nodes", "10000000000"], "--nodes: must be from 1 to"),
    ("fanout", ["--rounds", "0"], "--rounds: must be from 1 to"),
    ("fanout", ["--workers", "0"], "--workers: must be from 1 to"),
    ("fanout", ["--channels", "0"], "--channels: must be from 1 to"),
    ("fanout", ["--verify", "-1"], "--verify: must be from 0 to"),
    ("fanout", ["--connect-concurrency", "0"], "--connect-concurrency: must be"),
    ("fanout", ["--create-concurrency", "0"], "--create-concurrency: must be"),
    ("fanout", ["--keepalive", "0"], "--keepalive: must be from 0.5 to 600"),
    ("fanout", ["--keepalive", "inf"], "--keepalive: 'inf' is not a number"),
    ("fanout", ["--from-fleet", "/nonexistent"], "is not a directory"),
    ("storm", ["--timeout", "inf"], "--timeout: 'inf' is not a number"),
    ("storm", ["--timeout", "0.5"], "--timeout: must be from 1 to"),
    ("churn", ["--renames", "0"], "--renames: must be from 1 to"),
    ("rest", ["--requests", "0"], "--requests: must be from 1 to"),
    ("rest", ["--deep-page", "0"], "--deep-page: must be from 1 to"),
]


@pytest.mark.parametrize(("bench", "argv", "said"), BAD, ids=lambda v: str(v))
def test_a_bad_flag_is_a_usage_error(bench: str, argv: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr, done.stderr
    assert said in done.stderr, done.stderr


def test_a_directory_without_a_saved_fleet_is_refused(tmp_path: Path) -> None:
    (tmp_path / "admin_key").write_text("k\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.fanout", "--from-fleet", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "holds no saved fleet (missing identities.json, x.db)" in done.stderr

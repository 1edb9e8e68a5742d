"""Argument types for the benchmarks' flags: a bad value is a usage error
naming the flag, before anything is started (not a traceback minutes into
a run)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# ASCII only: int() and float() also take "١٢", "1_000" and " 12".
_WHOLE = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

# What `bench.simfleet.Fleet.save` writes into a fleet directory.
FLEET_FILES = ("admin_key", "identities.json", "x.db")


def whole(minimum: int, maximum: int = 10_000_000) -> Callable[[str], int]:
    """An integer from ``minimum`` to ``maximum``, in ASCII digits."""
    return _number(_WHOLE, int, "a whole number", minimum, maximum, "")


def seconds(minimum: float, maximum: float = 86_400) -> Callable[[str], float]:
    """A number of seconds from ``minimum`` to ``maximum`` (a day, by
    default: ``time.sleep`` refuses what a platform's time_t cannot hold)."""
    return _number(_NUMBER, float, "a number", minimum, maximum, " seconds")


N = TypeVar("N", int, float)


def _number(
    spelling: re.Pattern[str],
    convert: Callable[[str], N],
    kind: str,
    minimum: N,
    maximum: N,
    unit: str,
) -> Callable[[str], N]:
    def parse(text: str) -> N:
        if not spelling.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}")
        value = convert(text)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be from {_shown(minimum)} to {_shown(maximum)}{unit}, "
                f"not {text[:32]}"
            )
        return value

    return parse


def _shown(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def fleet_dir(text: str) -> Path:
    """A directory written by ``--save-fleet``."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    missing = [name for name in FLEET_FILES if not (path / name).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{text} holds no saved fleet (missing {', '.join(missing)})"
        )
    return path

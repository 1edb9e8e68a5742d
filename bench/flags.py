"""Argument types for the benchmarks' flags: a bad value is a usage error
naming the flag, before anything is started (not a traceback minutes into
a run)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

# What `bench.simfleet.Fleet.save` writes into a fleet directory.
FLEET_FILES = ("admin_key", "identities.json", "x.db")


def whole(minimum: int) -> Callable[[str], int]:
    """An integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def seconds(minimum: float, maximum: float = math.inf) -> Callable[[str], float]:
    """A finite number of seconds within [minimum, maximum]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            bounds = (
                f"from {minimum:g} to {maximum:g}"
                if maximum < math.inf
                else (f"at least {minimum:g}")
            )
            raise argparse.ArgumentTypeError(f"must be {bounds} seconds, not {text}")
        return value

    return parse


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

"""Printing benchmark results: a readable table, then one JSON line, last."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: Any, digits: int = 2) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, digits)
    return value


def table(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * max(len(title), width + 20)]
    for name, value in rows:
        shown = rounded(value)
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def emit(title: str, rows: Sequence[tuple[str, Any]], result: dict[str, Any]) -> None:
    """Print the table, then the JSON line (always the last line of output)."""
    print(table(title, rows), flush=True)
    print(json.dumps({k: rounded(v, 3) for k, v in result.items()}), flush=True)


def note(text: str) -> None:
    """Progress lines go to stderr so stdout stays table + JSON."""
    print(text, file=sys.stderr, flush=True)

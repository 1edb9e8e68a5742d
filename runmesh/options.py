"""Command-line value types the three programs share."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses NaN.

    click parses "nan" as a float, and NaN compares false with both bounds,
    so a plain FloatRange lets it through: ``--keepalive nan`` once started
    a coordinator whose streams never sent a keepalive and never reached
    their deadline.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if isinstance(number, float) and math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number

"""Path and query parameters that several routes share, with their real limits.

Each is declared once so that the OpenAPI document and the validation agree:
a constraint shown to clients is the one enforced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Query
from pydantic import BeforeValidator

NodeId = Annotated[
    str, Path(alias="id", min_length=1, max_length=128, examples=["node_7h3k2m9x"])
]

# Extended ISO 8601 only (2026-12-03T18:24:39Z). fromisoformat alone would
# also take a bare date, week dates and the basic format, none of which a
# client means when it filters by time.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_TIME_MESSAGE = "must be an ISO 8601 date-time such as 2026-12-03T18:24:39Z"


def utc_time(value: object) -> datetime:
    """A query value as an aware UTC datetime; one without an offset is UTC."""
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError(_TIME_MESSAGE)
    try:
        # RFC 3339 allows a lowercase "t" and "z"; fromisoformat does not.
        moment = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError(_TIME_MESSAGE) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is valid RFC 3339 but before year 1 in
        # UTC; as a filter bound it means the same as the earliest time.
        earliest = moment.year == datetime.min.year
        return (datetime.min if earliest else datetime.max).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a list: at most ``limit`` items after ``cursor``."""

    limit: int
    cursor: str


def page_of(
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="nextCursor of the last page")
    ] = None,
) -> Page:
    return Page(limit=limit, cursor=cursor or "")


PageDep = Annotated[Page, Depends(page_of)]


@dataclass(frozen=True, slots=True)
class Window:
    """A time filter; None on either side leaves that side open."""

    since: datetime | None
    until: datetime | None


_TIME_DESCRIPTION = "ISO 8601 date-time; without an offset it is UTC"


def window_of(
    since: Annotated[
        datetime | None,
        Query(description=f"only events at or after this; {_TIME_DESCRIPTION}"),
        BeforeValidator(utc_time),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description=f"only events at or before this; {_TIME_DESCRIPTION}"),
        BeforeValidator(utc_time),
    ] = None,
) -> Window:
    return Window(since=since, until=until)


WindowDep = Annotated[Window, Depends(window_of)]

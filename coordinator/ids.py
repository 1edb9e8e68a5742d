"""Identifiers and the clock, kept in one place so tests can reason about them."""

from __future__ import annotations

import datetime as dt
import secrets


def new_id(prefix: str) -> str:
    """A random, URL-safe id such as ``node_3kq9…`` (128 bits of entropy)."""
    return f"{prefix}_{secrets.token_urlsafe(16).replace('-', 'x').replace('_', 'y')}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

"""Opaque, tamper-evident cursors for stable keyset paging.

A cursor names the last row of a page by its sort key (created_at, id) and
carries an HMAC over that key and the list it came from (its kind, org
and filters), so a cursor that was edited, or handed to another list, is
refused as ``invalid_request`` instead of silently paging from somewhere
else.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json

from coordinator.errors import InvalidArgument

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def check_limit(limit: int) -> int:
    if limit == 0:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


class Cursors:
    def __init__(self, secret: bytes) -> None:
        self._secret = hashlib.sha256(b"runmesh-cursor:" + secret).digest()

    def _tag(self, scope: str, body: bytes) -> bytes:
        signed = scope.encode() + b"\0" + body
        return hmac.new(self._secret, signed, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, created_at: dt.datetime, row_id: str) -> str:
        body = json.dumps([created_at.isoformat(), row_id]).encode()
        tag = self._tag(scope, body)
        return base64.urlsafe_b64encode(tag + body).decode().rstrip("=")

    def decode(self, scope: str, cursor: str) -> tuple[dt.datetime, str]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise InvalidArgument("cursor is not valid") from None
        tag, body = raw[:16], raw[16:]
        expected = self._tag(scope, body)
        if len(cursor) > 512 or not hmac.compare_digest(tag, expected):
            raise InvalidArgument("cursor is not valid")
        created, row_id = json.loads(body)
        return dt.datetime.fromisoformat(created), str(row_id)

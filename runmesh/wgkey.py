"""WireGuard keys as they travel: standard base64 of 32 bytes.

The same text `wg genkey` / `wg pubkey` print, so an operator can compare a
key in the API with what `wg show` lists. UAPI speaks hex instead; the
conversions live here so no other module decodes keys by hand.
"""

from __future__ import annotations

import base64
import binascii

KEY_LENGTH = 32


class InvalidKey(ValueError):
    """A key that is not standard base64 of exactly 32 bytes."""


def decode_key(text: str) -> bytes:
    """The 32 raw bytes of a base64 key, or InvalidKey saying why not."""
    if not isinstance(text, str) or len(text) != 44 or not text.endswith("="):
        raise InvalidKey("must be standard base64 of 32 bytes (44 characters)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("is not valid standard base64") from None
    if len(raw) != KEY_LENGTH:
        raise InvalidKey("must decode to 32 bytes")
    if base64.b64encode(raw).decode() != text:
        # Non-canonical padding bits: two spellings of one key would let a
        # device dodge the one-active-node-per-key rule.
        raise InvalidKey("is not canonical base64")
    return raw


def encode_key(raw: bytes) -> str:
    if len(raw) != KEY_LENGTH:
        raise InvalidKey("must be 32 bytes")
    return base64.b64encode(raw).decode()


def key_to_hex(text: str) -> str:
    return decode_key(text).hex()


def hex_to_key(hex_text: str) -> str:
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError:
        raise InvalidKey("is not valid hex") from None
    return encode_key(raw)

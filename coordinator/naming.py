"""Node names: DNS labels, unique among an org's active nodes.

A name is 1-63 characters of a-z, 0-9 and '-', neither starting nor ending
with '-', so it can serve as a host name in the mesh. A name derived from a
device label must always come out valid, whatever the label holds: accents
are folded, anything else becomes a hyphen, and a label with nothing left
(``我的电脑``) falls back to ``device``. Uniqueness adds ``-2``, ``-3``, …
"""

from __future__ import annotations

import re
import unicodedata

from coordinator.errors import InvalidArgument

MAX_LENGTH = 63
FALLBACK = "device"
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_name(name: str) -> str:
    if not _LABEL.fullmatch(name):
        raise InvalidArgument(
            f"name {name[:80]!r} is not a DNS label: 1-63 characters of a-z, "
            "0-9 and '-', not starting or ending with '-'"
        )
    return name


def normalise(label: str) -> str:
    folded = unicodedata.normalize("NFKD", label)
    ascii_only = folded.encode("ascii", "ignore").decode().lower()
    hyphenated = re.sub(r"[^a-z0-9]+", "-", ascii_only).strip("-")
    return hyphenated[:MAX_LENGTH].strip("-") or FALLBACK


def unique_name(base: str, taken: set[str]) -> str:
    """``base`` or the first ``base-N`` not in ``taken``, still a valid label."""
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: MAX_LENGTH - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1

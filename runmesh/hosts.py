"""Whether a host is this machine: plaintext is allowed only there."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """``host`` is a name or an address (IPv6 with or without brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

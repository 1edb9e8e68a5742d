"""meshd's error tree.

    MeshdError                 a message for the operator; exit non-zero
    ├── StateError             the state directory is missing, unreadable, broken
    ├── NodeRevoked            the coordinator revoked this node
    └── LinkFailed             the link code expired or was denied

WireGuard errors live in ``meshd.wireguard.backend`` (WireGuardError). The
command line is the one place that turns these into a message and an exit
status; nothing below it prints.
"""

from __future__ import annotations


class MeshdError(Exception):
    exit_code = 1


class StateError(MeshdError):
    exit_code = 2


class NodeRevoked(MeshdError):
    exit_code = 3


class LinkFailed(MeshdError):
    exit_code = 4

"""Choosing how meshd drives WireGuard: `--backend kernel | userspace | auto`.

`auto` prefers the kernel module on Linux, where it is faster and needs no
process of its own, and falls back to wireguard-go when the module is
missing (as on hosts and containers without it). The choice is made once,
at start-up: the loops only ever see a WireGuardBackend.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .wireguard.backend import WireGuardBackend
from .wireguard.kernel import KernelBackend, KernelModuleMissing, kernel_available
from .wireguard.userspace import UserspaceBackend

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("kernel", "userspace", "auto")

__all__ = ["BACKEND_NAMES", "KernelModuleMissing", "kernel_available", "make_backend"]


def make_backend(
    name: str,
    *,
    netns: str | None = None,
    wireguard_log: Path | None = None,
) -> KernelBackend | UserspaceBackend:
    """The backend called `name`; KernelModuleMissing if "kernel" cannot run.

    `netns` puts the device in a named network namespace (tests);
    `wireguard_log` is where wireguard-go's output goes, when it is used.
    """
    if name == "userspace":
        return UserspaceBackend(netns=netns, log_path=wireguard_log)
    if name == "kernel":
        available, reason = kernel_available()
        if not available:
            raise KernelModuleMissing(
                f"--backend kernel: {reason}; the WireGuard kernel module is "
                "missing, use --backend userspace (wireguard-go) instead"
            )
        return KernelBackend(netns=netns)
    if name == "auto":
        return _automatic(netns, wireguard_log)
    raise ValueError(f"unknown backend {name!r}: choose one of {BACKEND_NAMES}")


def _automatic(
    netns: str | None, wireguard_log: Path | None
) -> KernelBackend | UserspaceBackend:
    if sys.platform == "linux":
        available, reason = kernel_available()
        if available:
            logger.info("using the kernel WireGuard backend")
            return KernelBackend(netns=netns)
        logger.info("using wireguard-go: %s", reason)
    return UserspaceBackend(netns=netns, log_path=wireguard_log)


def _fits_interface(backend: KernelBackend | UserspaceBackend) -> WireGuardBackend:
    # Checked by mypy: both backends satisfy the protocol the loops use.
    return backend

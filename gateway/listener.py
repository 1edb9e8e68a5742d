"""The gateway's HTTP listener: TLS, or plaintext only where nobody listens in.

Clients send their API key in a header of every request, so plaintext HTTP
off loopback hands the key to anyone on the path. The rule is the
coordinator's for its gRPC listener (``coordinator.server.Listener``): a
certificate, a loopback address, or an explicit ``--insecure`` for a
deployment where something else (a TLS-terminating proxy, a VPN) encrypts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from runmesh.hosts import is_loopback


class ListenError(Exception):
    """The listen address cannot be used as asked."""


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Plaintext on a non-loopback address, explicitly asked for.
    insecure: bool = False

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def describe(self) -> str:
        return "plaintext HTTP" if self.tls_cert is None else "HTTPS"

    def check(self) -> None:
        """Refuse what would expose keys or fail only once uvicorn starts."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ListenError("--tls-cert and --tls-key must be given together")
        if self.tls_cert is None and not self.insecure and not is_loopback(self.host):
            raise ListenError(
                f"refusing to serve plaintext HTTP on {self.address}: API keys "
                "would cross the network in the clear. Give --tls-cert and "
                "--tls-key, or --insecure if something else encrypts the traffic"
            )
        self._check_tls_files()

    def _check_tls_files(self) -> None:
        # Loaded once here so that a wrong path or a key of another
        # certificate is one line at the terminal, not uvicorn's traceback.
        if self.tls_cert is None or self.tls_key is None:
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # A password-protected key fails here instead of prompting.
            context.load_cert_chain(self.tls_cert, self.tls_key, password=b"")
        except (OSError, ssl.SSLError) as exc:
            raise ListenError(f"cannot use the TLS files: {exc}") from None

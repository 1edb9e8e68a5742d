"""The node's state directory: its private key, its identity, its last map.

    DIR/private.key   the X25519 private key, base64 like `wg genkey` (0600)
    DIR/node.json     who the node is and where its coordinator is
    DIR/map.json      the last peer map applied, so the device can be set
                      up again without a coordinator
    DIR/REVOKED       left when the coordinator revoked the node

Files are written atomically (temporary file, fsync, rename), so a crash
never leaves half a file; a file that is broken anyway (truncated by a full
disk, edited by hand) is refused with a message naming it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from meshd.errors import NodeRevoked, StateError
from runmesh.wgkey import InvalidKey, decode_key, encode_key

KEY_FILE = "private.key"
IDENTITY_FILE = "node.json"
MAP_FILE = "map.json"
REVOKED_FILE = "REVOKED"


@dataclass(frozen=True)
class Identity:
    node_id: str
    org_id: str
    name: str
    public_key: str
    coordinator_target: str
    coordinator_public_key: str
    ipv4: str
    ipv6: str


@dataclass
class SavedMap:
    version: int
    addresses: list[str]
    name: str
    # Peers as the wire gives them (node_id, name, public_key, allowed_ips,
    # endpoints, persistent_keepalive), by public key.
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, name: str) -> Path:
        return self.path / name

    # ---- the key ----

    def load_or_create_key(self) -> PrivateKey:
        self.ensure_not_revoked()
        if self._file(KEY_FILE).exists():
            return self.load_key()
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = PrivateKey.generate()
        self._write(KEY_FILE, encode_key(bytes(key)) + "\n")
        return key

    def load_key(self) -> PrivateKey:
        path = self._file(KEY_FILE)
        try:
            mode = path.stat().st_mode
            text = path.read_text().strip()
        except FileNotFoundError:
            raise StateError(f"{path} does not exist: run `meshd link` first") from None
        except OSError as exc:
            raise StateError(f"{path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StateError(
                f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}`"
            )
        try:
            return PrivateKey(decode_key(text))
        except InvalidKey as exc:
            raise StateError(f"{path}: the private key {exc}") from None

    # ---- the identity ----

    def save_identity(self, identity: Identity) -> None:
        self._write(IDENTITY_FILE, json.dumps(asdict(identity), indent=2) + "\n")

    def load_identity(self) -> Identity:
        self.ensure_not_revoked()
        raw = self._read_json(IDENTITY_FILE, missing="run `meshd link` first")
        try:
            identity = Identity(
                **{k: str(raw[k]) for k in Identity.__dataclass_fields__}
            )
            decode_key(identity.public_key)
            decode_key(identity.coordinator_public_key)
        except (KeyError, TypeError, InvalidKey) as exc:
            raise StateError(
                f"{self._file(IDENTITY_FILE)} is not a valid node identity "
                f"({type(exc).__name__}: {exc}); link the device again"
            ) from None
        return identity

    # ---- the last applied map ----

    def save_map(self, saved: SavedMap) -> None:
        self._write(MAP_FILE, json.dumps(asdict(saved)) + "\n")

    def load_map(self) -> SavedMap | None:
        if not self._file(MAP_FILE).exists():
            return None
        raw = self._read_json(MAP_FILE, missing="")
        try:
            return SavedMap(
                version=int(raw["version"]),
                addresses=[str(a) for a in raw["addresses"]],
                name=str(raw["name"]),
                peers={str(k): dict(v) for k, v in raw["peers"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            # Only a cache: without it the node waits for the coordinator's
            # full map, so a broken one is dropped rather than fatal.
            self._file(MAP_FILE).unlink(missing_ok=True)
            return None

    # ---- revocation ----

    def mark_revoked(self, reason: str) -> None:
        """Forget the identity and key; leave a note saying why."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write(REVOKED_FILE, reason + "\n")
        for name in (KEY_FILE, IDENTITY_FILE, MAP_FILE):
            self._file(name).unlink(missing_ok=True)

    def ensure_not_revoked(self) -> None:
        note = self._file(REVOKED_FILE)
        if note.exists():
            why = note.read_text().strip()
            raise NodeRevoked(
                f"this node was revoked by its coordinator ({why}). "
                f"To join the mesh again, remove {note} and run `meshd link` "
                f"with --state-dir {self.path}"
            )

    # ---- files ----

    def _read_json(self, name: str, missing: str) -> dict[str, Any]:
        path = self._file(name)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise StateError(f"{path} does not exist: {missing}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{path} cannot be read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise StateError(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                "it may be truncated"
            ) from None
        if not isinstance(raw, dict):
            raise StateError(f"{path} must hold a JSON object")
        return raw

    def _write(self, name: str, text: str) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._file(name)
        temporary = target.with_name(f".{name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)

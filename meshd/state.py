"""The node's state directory: its private key, its identity, its last map.

    DIR/private.key   the X25519 private key, base64 like `wg genkey` (0600)
    DIR/private.key.next  a key being rotated to (`meshd rotate-key`), kept
                      until the coordinator confirmed it (0600)
    DIR/node.json     who the node is and where its coordinator is
    DIR/map.json      the last peer map applied, so the device can be set
                      up again without a coordinator
    DIR/status.json   what `meshd up` is doing, for `meshd status` (0644)
    DIR/REVOKED       left when the coordinator revoked the node

Files are written atomically (temporary file, fsync, rename), so a crash
never leaves half a file; a file that is broken anyway (truncated by a full
disk, edited by hand) is refused with a message naming it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import stat
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from nacl.public import PrivateKey

from meshd.channel import check_target
from meshd.errors import NodeRevoked, StateError
from runmesh.v1 import node_pb2
from runmesh.wgkey import InvalidKey, decode_key, encode_key

log = logging.getLogger(__name__)

KEY_FILE = "private.key"
NEXT_KEY_FILE = "private.key.next"
STATUS_FILE = "status.json"
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
        if os.path.lexists(self._file(KEY_FILE)):
            return self.load_key()
        key = PrivateKey.generate()
        self._write(KEY_FILE, encode_key(bytes(key)) + "\n")
        return key

    def load_key(self) -> PrivateKey:
        return self._load_key_file(KEY_FILE)

    def _load_key_file(self, name: str) -> PrivateKey:
        path = self._file(name)
        raw = self._read(name, missing="run `meshd link` first")
        mode = self._stat(name).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StateError(
                f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}`"
            )
        try:
            return PrivateKey(decode_key(raw.decode("ascii").strip()))
        except (UnicodeDecodeError, InvalidKey) as exc:
            reason = exc if isinstance(exc, InvalidKey) else "is not base64 text"
            raise StateError(
                f"{path}: the private key {reason}; restore it from a backup "
                "or link the device again"
            ) from None

    # ---- key rotation ----

    def create_next_key(self) -> PrivateKey:
        """A fresh key in private.key.next, written before the coordinator
        hears of it, so a crash mid-rotation cannot lose the key it accepted."""
        key = PrivateKey.generate()
        self._write(NEXT_KEY_FILE, encode_key(bytes(key)) + "\n")
        return key

    def load_next_key(self) -> PrivateKey | None:
        """The key of an unfinished rotation; None if there is none."""
        if not os.path.lexists(self._file(NEXT_KEY_FILE)):
            return None
        return self._load_key_file(NEXT_KEY_FILE)

    def discard_next_key(self) -> None:
        self._file(NEXT_KEY_FILE).unlink(missing_ok=True)

    def promote_next_key(self, key: PrivateKey) -> Identity:
        """Make `key` (the one in private.key.next) the node's key.

        The rename is atomic, and node.json is rewritten after it; a crash in
        between leaves a node.json naming the old public key, which
        `load_node` repairs from the key itself. Two processes finishing the
        same rotation (`meshd up` and `meshd rotate-key`) both succeed.
        """
        try:
            os.replace(self._file(NEXT_KEY_FILE), self._file(KEY_FILE))
        except FileNotFoundError:
            if self.load_key().public_key != key.public_key:
                raise StateError(
                    f"{self._file(NEXT_KEY_FILE)} vanished before it could be "
                    "made the node's key"
                ) from None
        except OSError as exc:
            raise StateError(
                f"cannot rename {self._file(NEXT_KEY_FILE)}: {exc.strerror}"
            ) from None
        return self._repair_identity(self.load_identity(), key)

    def load_node(self) -> tuple[Identity, PrivateKey]:
        """The identity and key, with node.json's public key made to match
        the key (the one step of a rotation a crash can leave undone)."""
        identity = self.load_identity()
        key = self.load_key()
        return self._repair_identity(identity, key), key

    def _repair_identity(self, identity: Identity, key: PrivateKey) -> Identity:
        public_key = encode_key(bytes(key.public_key))
        if identity.public_key == public_key:
            return identity
        log.warning(
            "node.json names public key %s but private.key holds %s; "
            "updating node.json (a finished key rotation)",
            identity.public_key,
            public_key,
        )
        repaired = replace(identity, public_key=public_key)
        self.save_identity(repaired)
        return repaired

    # ---- status ----

    def save_status(self, status: dict[str, Any]) -> None:
        # Readable by all: it holds no secret, and `meshd status` should work
        # for an operator without root.
        self._write(STATUS_FILE, json.dumps(status, indent=2) + "\n", mode=0o644)

    def load_status(self) -> dict[str, Any] | None:
        """What the last `meshd up` wrote; None if absent or unreadable."""
        if not os.path.lexists(self._file(STATUS_FILE)):
            return None
        try:
            return self._read_json(STATUS_FILE, missing="")
        except StateError as exc:
            log.warning("ignoring %s", exc)
            return None

    # ---- the identity ----

    def save_identity(self, identity: Identity) -> None:
        self._write(IDENTITY_FILE, json.dumps(asdict(identity), indent=2) + "\n")

    def load_identity(self) -> Identity:
        self.ensure_not_revoked()
        raw = self._read_json(IDENTITY_FILE, missing="run `meshd link` first")
        try:
            identity = Identity(
                **{k: _text(raw, k) for k in Identity.__dataclass_fields__}
            )
            decode_key(identity.public_key)
            decode_key(identity.coordinator_public_key)
            check_target(identity.coordinator_target)
            ipaddress.IPv4Address(identity.ipv4)
            ipaddress.IPv6Address(identity.ipv6)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"{self._file(IDENTITY_FILE)} is not a valid node identity "
                f"({type(exc).__name__}: {exc}); link the device again"
            ) from None
        return identity

    # ---- the last applied map ----

    def save_map(self, saved: SavedMap) -> None:
        self._write(MAP_FILE, json.dumps(asdict(saved)) + "\n")

    def load_map(self) -> SavedMap | None:
        """The last map applied; None if there is none or it was broken.

        Only a cache: without it the node waits for the coordinator's full
        map, so a broken one is dropped (with a warning) rather than fatal.
        One that cannot even be read is an error, as it cannot be dropped.
        """
        if not os.path.lexists(self._file(MAP_FILE)):
            return None
        try:
            raw = self._read_json(MAP_FILE, missing="")
            return SavedMap(
                version=_version(raw["version"]),
                addresses=[str(ipaddress.ip_interface(a)) for a in raw["addresses"]],
                name=str(raw["name"]),
                peers={str(k): _peer(v) for k, v in raw["peers"].items()},
            )
        except BrokenFile as exc:
            reason = str(exc)
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            ArithmeticError,
            ParseError,
        ) as exc:
            reason = f"{self._file(MAP_FILE)} is not a valid map ({exc})"
        self.discard_map(reason)
        return None

    def discard_map(self, reason: str) -> None:
        log.warning("%s; dropping it and waiting for a full map", reason)
        try:
            self._file(MAP_FILE).unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(
                f"cannot remove the broken {self._file(MAP_FILE)}: {exc.strerror}"
            ) from None

    # ---- revocation ----

    def mark_revoked(self, reason: str) -> None:
        """Forget the identity and key; leave a note saying why."""
        self._write(REVOKED_FILE, reason + "\n")
        for name in (KEY_FILE, NEXT_KEY_FILE, IDENTITY_FILE, MAP_FILE):
            try:
                self._file(name).unlink(missing_ok=True)
            except OSError as exc:
                raise StateError(
                    f"cannot remove {self._file(name)}: {exc.strerror}"
                ) from None

    def ensure_not_revoked(self) -> None:
        note = self._file(REVOKED_FILE)
        if not os.path.lexists(note):
            return
        try:
            why = self._read(REVOKED_FILE, missing="").decode(errors="replace")
        except StateError as exc:
            why = f"the note is unreadable: {exc}"
        raise NodeRevoked(
            f"this node was revoked by its coordinator ({why.strip()}). "
            f"To join the mesh again, remove {note} and run `meshd link` "
            f"with --state-dir {self.path}"
        )

    # ---- files ----

    def _stat(self, name: str) -> os.stat_result:
        try:
            return self._file(name).stat()
        except OSError as exc:
            raise StateError(f"{self._file(name)}: {exc.strerror}") from None

    def _read(self, name: str, missing: str) -> bytes:
        path = self._file(name)
        try:
            # O_NONBLOCK: a FIFO in place of a file is refused, not waited on.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as file:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise StateError(f"{path} is not a regular file")
                return file.read()
        except FileNotFoundError:
            raise StateError(f"{path} does not exist: {missing}") from None
        except NotADirectoryError:
            raise StateError(
                f"state directory {self.path} is not a directory"
            ) from None
        except OSError as exc:
            raise StateError(f"{path} cannot be read: {exc.strerror}") from None

    def _read_json(self, name: str, missing: str) -> dict[str, Any]:
        path = self._file(name)
        data = self._read(name, missing)
        try:
            raw = json.loads(
                data.decode(), parse_float=_finite, parse_constant=_no_constant
            )
        except UnicodeDecodeError:
            raise BrokenFile(f"{path} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise BrokenFile(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                "it may be truncated"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise BrokenFile(f"{path} cannot be parsed: {exc}") from None
        if not isinstance(raw, dict):
            raise BrokenFile(f"{path} must hold a JSON object")
        return raw

    def _write(self, name: str, text: str, mode: int = 0o600) -> None:
        target = self._file(name)
        # One temporary name per process: `meshd up` and `meshd rotate-key`
        # may finish the same rotation at once.
        temporary = target.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, mode)
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except FileExistsError:
            raise StateError(
                f"state directory {self.path} is not a directory"
            ) from None
        except OSError as exc:
            raise StateError(f"cannot write {target}: {exc.strerror}") from None


class BrokenFile(StateError):
    """A state file that was read but holds something else than it should."""


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"a peer must be a JSON object, not {type(value).__name__}")
    return value


def _version(value: Any) -> int:
    # bool is an int to Python, and int() would truncate 7.9 or fail on 1e999;
    # the version goes back to the coordinator as a uint64.
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError(
            f"version {str(value)[:32]!r} is not a whole number from 0 to 2**63-1"
        )
    return value


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent; 1e999 is refused, not inf."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:32]} is out of range")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _peer(value: Any) -> dict[str, Any]:
    """A saved peer as every reader of the map may take it (``meshd status``
    formats its fields): a JSON object that parses as a ``Peer``, in the
    form ``save_map`` writes (a null list comes back as no list)."""
    return MessageToDict(ParseDict(_object(value), node_pb2.Peer()))

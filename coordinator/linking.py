"""The device-link flow: start, poll, approve.

A code is 6 characters from an alphabet of digits and consonants without
look-alikes (no 0/O, 1/I/L, no vowels — so no words are spelled by chance):
27 symbols, about 3.9e8 codes. It is valid for a limited time and approved
at most once; polling is paced by ``interval``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coordinator import accounts, audit, changelog, ipam, naming
from coordinator.accounts import Caller
from coordinator.changes import ChangeOp
from coordinator.errors import (
    Conflict,
    CoordinatorError,
    Expired,
    InvalidArgument,
    NotFound,
    RateLimited,
)
from coordinator.ids import new_id, utcnow
from coordinator.models import LinkRequest, LinkState, Node, Org
from coordinator.settings import Settings
from runmesh.wgkey import InvalidKey, decode_key

ALPHABET = "23456789BCDFGHJKMNPQRSTVWXZ"
CODE_LENGTH = 6
METADATA_MAX_DEPTH = 8
_FIELD_LIMITS = {"deviceLabel": 256, "os": 64, "appVersion": 64, "hostname": 256}


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    """Codes are case-insensitive and may be typed with a hyphen or spaces."""
    typed = "".join(text.split()).replace("-", "")
    # Check before upper-casing: some characters upper-case to two letters
    # ("ß" -> "SS") and would slip a wrong length past the check.
    code = typed.upper() if typed.isascii() else ""
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        raise InvalidArgument(f"code must be {CODE_LENGTH} characters from {ALPHABET}")
    return code


def check_public_key(text: str) -> str:
    try:
        decode_key(text)
    except InvalidKey as exc:
        raise InvalidArgument(f"publicKey {exc}") from None
    return text


def check_device_fields(fields: dict[str, str]) -> None:
    for name, value in fields.items():
        if len(value) > _FIELD_LIMITS[name]:
            raise InvalidArgument(
                f"{name} is longer than {_FIELD_LIMITS[name]} characters"
            )
        if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value):
            raise InvalidArgument(f"{name} must not contain control characters")


def check_metadata(values: Any, depth: int = 0) -> None:
    """clientMetadata: small, shallow, plain JSON (checked again here
    because gRPC clients reach StartLink without the gateway)."""
    if depth > METADATA_MAX_DEPTH:
        raise InvalidArgument(
            f"clientMetadata is nested deeper than {METADATA_MAX_DEPTH} levels"
        )
    if isinstance(values, dict):
        for key, value in values.items():
            if len(key) > 64 or any(unicodedata.category(c) == "Cc" for c in key):
                raise InvalidArgument(
                    "clientMetadata: keys are 1-64 printable characters"
                )
            check_metadata(value, depth + 1)
    elif isinstance(values, list):
        for value in values:
            check_metadata(value, depth + 1)
    elif isinstance(values, float) and not math.isfinite(values):
        raise InvalidArgument("clientMetadata: numbers must be finite")


def active_node_with_key(session: Session, public_key: str) -> Node | None:
    return session.scalar(
        select(Node).where(Node.public_key == public_key, Node.revoked_at.is_(None))
    )


def start_link(
    session: Session,
    settings: Settings,
    *,
    public_key: str,
    device_label: str,
    os: str,
    app_version: str,
    hostname: str,
    client_metadata: dict[str, Any],
) -> LinkRequest:
    check_public_key(public_key)
    check_device_fields(
        {
            "deviceLabel": device_label,
            "os": os,
            "appVersion": app_version,
            "hostname": hostname,
        }
    )
    if active_node_with_key(session, public_key) is not None:
        raise Conflict("this public key already belongs to an active node")

    # A new start for the same key ends the older pending request: only the
    # newest code a device shows can be approved.
    session.execute(
        update(LinkRequest)
        .where(
            LinkRequest.public_key == public_key,
            LinkRequest.state == LinkState.PENDING,
        )
        .values(state=LinkState.EXPIRED)
    )
    now = utcnow()
    request = LinkRequest(
        id=new_id("link"),
        code=_unused_code(session),
        public_key=public_key,
        device_label=device_label,
        os=os,
        app_version=app_version,
        hostname=hostname,
        client_metadata=client_metadata,
        state=LinkState.PENDING,
        created_at=now,
        expires_at=now + settings.link_ttl,
    )
    session.add(request)
    session.flush()
    return request


def _unused_code(session: Session) -> str:
    while True:
        code = new_code()
        exists = session.scalar(select(LinkRequest.id).where(LinkRequest.code == code))
        if exists is None:
            return code


def approve_url(settings: Settings, code: str) -> str:
    return f"{settings.approve_url}?code={code}"


def poll_link(
    session: Session, settings: Settings, *, code: str, public_key: str
) -> LinkRequest:
    code = normalise_code(code)
    check_public_key(public_key)
    request = _find(session, code)
    if request is None or request.public_key != public_key:
        raise NotFound("no link request with that code and public key")

    now = utcnow()
    if request.last_polled_at is not None:
        # A little slack so a device that waits exactly `interval` is never
        # refused because of clock granularity.
        wait = (
            settings.link_interval * 0.9
            - (now - request.last_polled_at).total_seconds()
        )
        if wait > 0:
            raise RateLimited(
                f"polled too soon; wait {settings.link_interval} s between polls",
                retry_after=math.ceil(wait),
            )
    request.last_polled_at = now
    _expire_if_due(request, now)
    return request


def _expire_if_due(request: LinkRequest, now: dt.datetime) -> None:
    if request.state == LinkState.PENDING and request.expires_at <= now:
        request.state = LinkState.EXPIRED


def _find(session: Session, code: str) -> LinkRequest | None:
    return session.scalar(select(LinkRequest).where(LinkRequest.code == code))


@dataclass(frozen=True)
class Approval:
    """One code to approve, as a caller asked for it."""

    caller: Caller
    code: str
    name: str


@dataclass
class _Batch:
    """What the approvals of one unit of work know of each other."""

    requests: dict[str, LinkRequest]
    taken_keys: set[str]
    orgs: dict[str, Org]
    names: dict[str, set[str]] = field(default_factory=dict)


def approve_link(
    session: Session,
    settings: Settings,
    caller: Caller,
    *,
    code: str,
    name: str,
) -> Node:
    outcome = approve_links(session, settings, [Approval(caller, code, name)])[0]
    if isinstance(outcome, CoordinatorError):
        raise outcome
    return outcome


def approve_links(
    session: Session, settings: Settings, approvals: Sequence[Approval]
) -> list[Node | CoordinatorError]:
    """Approve several codes in one unit of work; each succeeds or fails alone.

    Every check of one approval runs before it changes anything, so a
    refused one leaves the session as it was (except that an expired code
    is marked expired, which is true whatever else happens). The requests,
    the keys already in use and the orgs are read once for the whole batch,
    and everything is written in one flush at commit.
    """
    codes = set()
    for approval in approvals:
        with contextlib.suppress(InvalidArgument):
            codes.add(normalise_code(approval.code))
    requests = {
        r.code: r
        for r in session.scalars(select(LinkRequest).where(LinkRequest.code.in_(codes)))
    }
    keys = {r.public_key for r in requests.values()}
    taken = session.scalars(
        select(Node.public_key).where(
            Node.public_key.in_(keys), Node.revoked_at.is_(None)
        )
    )
    orgs = accounts.orgs_for_update(session, (a.caller.org_id for a in approvals))
    batch = _Batch(requests, set(taken), orgs)
    outcomes: list[Node | CoordinatorError] = []
    # Names chosen in this batch are tracked in batch.names; flushing before
    # every query to let them be seen would cost more than the batch saves.
    with session.no_autoflush:
        for approval in approvals:
            try:
                outcomes.append(_approve_one(session, settings, approval, batch))
            except CoordinatorError as exc:
                outcomes.append(exc)
    return outcomes


def _approve_one(
    session: Session, settings: Settings, approval: Approval, batch: _Batch
) -> Node:
    caller = approval.caller
    caller.require("runmesh:write")
    request = batch.requests.get(normalise_code(approval.code))
    if request is None:
        raise NotFound("no link request with that code")
    if request.state == LinkState.APPROVED:
        raise Conflict("this code was already approved")
    if request.state == LinkState.DENIED:
        raise Conflict("this code was denied")
    now = utcnow()
    _expire_if_due(request, now)
    if request.state == LinkState.EXPIRED:
        raise Expired("this code has expired; start the link again on the device")
    if request.public_key in batch.taken_keys:
        raise Conflict("this public key already belongs to an active node")
    org = batch.orgs.get(caller.org_id)
    if org is None:
        raise NotFound("the caller's org no longer exists")

    in_batch = batch.names.setdefault(org.id, set())
    name = _name_for(session, org.id, approval.name, request, in_batch)
    node_id = new_id("node")
    address = ipam.allocate_address(session, org, node_id, settings.address_quarantine)
    # Nothing was changed before this point; from here on nothing fails.
    node = Node(
        id=node_id,
        org_id=org.id,
        name=name,
        device_label=request.device_label,
        hostname=request.hostname,
        os=request.os,
        app_version=request.app_version,
        public_key=request.public_key,
        owner_user_id=caller.user_id,
        endpoints=[],
        listen_port=0,
        online=False,
        created_at=now,
    )
    node.address = address
    session.add(node)
    batch.taken_keys.add(node.public_key)
    in_batch.add(name)
    changelog.record_change(session, org, ChangeOp.UPSERT, node)

    request.state = LinkState.APPROVED
    request.node = node
    request.approved_by = caller.user_id
    _audit_approval(session, caller, request, node)
    return node


def record_expired_attempt(session: Session, caller: Caller, code: str) -> None:
    """Note, in the caller's org, that someone tried to approve an expired
    code (the refused approval itself is rolled back)."""
    request = _find(session, normalise_code(code))
    if request is None:
        return
    request.state = LinkState.EXPIRED
    audit.record(
        session,
        org_id=caller.org_id,
        actor=caller.actor,
        action="device.link.expired",
        target_type="linkRequest",
        target_id=request.id,
        attributes={"deviceLabel": request.device_label},
    )


def _name_for(
    session: Session,
    org_id: str,
    requested: str,
    request: LinkRequest,
    in_batch: set[str],
) -> str:
    if requested:
        naming.check_name(requested)
        if requested in in_batch or _name_taken(session, org_id, requested):
            raise Conflict(f"an active node is already named {requested!r}")
        return requested
    base = naming.normalise(request.device_label or request.hostname)
    return naming.unique_name(base, _taken_names(session, org_id, base) | in_batch)


def _name_taken(session: Session, org_id: str, name: str) -> bool:
    found = session.scalar(
        select(Node.id).where(
            Node.org_id == org_id, Node.revoked_at.is_(None), Node.name == name
        )
    )
    return found is not None


def _taken_names(session: Session, org_id: str, base: str) -> set[str]:
    """Active names starting like ``base``: all that ``unique_name`` could
    collide with (``base``, ``base-N``, and their shortened forms for a long
    base). A range on the (org, name) index, not a LIKE, which SQLite cannot
    answer from an index (its LIKE ignores case)."""
    stem = base[:40]
    names = session.scalars(
        select(Node.name).where(
            Node.org_id == org_id,
            Node.revoked_at.is_(None),
            # Every DNS-label character sorts below "~".
            Node.name >= stem,
            Node.name < stem + "~",
        )
    )
    return set(names)


def _audit_approval(
    session: Session, caller: Caller, request: LinkRequest, node: Node
) -> None:
    # The link request belongs to no org until it is approved, so its start
    # is recorded now, into the approving org, with its own time.
    device = audit.Actor("node", request.public_key)
    steps = (
        (device, "device.link.started", request.created_at),
        (caller.actor, "device.link.approved", None),
    )
    for actor, action, at in steps:
        audit.record(
            session,
            org_id=node.org_id,
            actor=actor,
            action=action,
            target_type="node",
            target_id=node.id,
            attributes={"linkRequestId": request.id, "name": node.name},
            at=at,
        )

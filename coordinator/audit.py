"""Audit events: who changed what in an org, written with the change itself."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from coordinator.ids import new_id, utcnow
from coordinator.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    # "user", "apiKey", "node" or "system"
    type: str
    id: str


SYSTEM = Actor("system", "coordinator")


def record(
    session: Session,
    *,
    org_id: str,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    attributes: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> None:
    session.add(
        AuditEvent(
            id=new_id("evt"),
            org_id=org_id,
            actor_type=actor.type,
            actor_id=actor.id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            attributes=attributes or {},
            created_at=at or utcnow(),
        )
    )

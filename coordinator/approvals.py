"""Approvals, written in batches: many ApproveLink calls, one unit of work.

Most of an approval's cost is the unit of work around it (session, org
lock, flush, commit), not the approval itself. Approvals that arrive while
one batch is being written wait and go into the next one together, so
under load one commit carries many approvals, and a lone approval waits
for nothing. Each approval in a batch succeeds or fails alone (see
``linking.approve_links``); if the batch as a whole cannot commit, its
approvals are tried again one at a time, so one bad apple spoils only
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from coordinator import accounts, linking
from coordinator.errors import CoordinatorError, Unavailable
from coordinator.models import Node
from coordinator.settings import Settings
from coordinator.store import Database, in_transaction

log = logging.getLogger(__name__)

# At most this many approvals per unit of work (see ipam.REUSE_CANDIDATES).
MAX_BATCH = 64


@dataclass(frozen=True)
class Request:
    api_key: str | None
    code: str
    name: str


@dataclass
class _Waiting:
    request: Request
    answer: asyncio.Future[Node]


class ApprovalQueue:
    def __init__(
        self,
        sessions: Database,
        settings: Settings,
        on_approved: Callable[[str], None],
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._on_approved = on_approved
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def approve(self, request: Request) -> Node:
        """The new node, or the approval's own CoordinatorError."""
        if self._closed:
            raise Unavailable("the coordinator is shutting down")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="approvals")
        answer: asyncio.Future[Node] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(request, answer))
        self._wake.set()
        return await answer

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiting in self._waiting:
            if not waiting.answer.done():
                waiting.answer.set_exception(
                    Unavailable("the coordinator is shutting down")
                )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._write(batch)

    async def _write(self, batch: list[_Waiting]) -> None:
        requests = [w.request for w in batch]
        try:
            outcomes = await in_transaction(
                self._sessions, lambda session: self._approve_all(session, requests)
            )
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            log.warning(
                "a batch of %d approvals failed (%s); writing them one by one",
                len(batch),
                type(exc).__name__,
            )
            for waiting in batch:
                await self._write([waiting])
            return
        # The feeds first: each approval's caller resumes after them, so
        # the fan-out does not wait behind the answers being built.
        for org_id in {o.org_id for o in outcomes if isinstance(o, Node)}:
            self._on_approved(org_id)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _settle(waiting, outcome)

    def _approve_all(
        self, session: Session, requests: list[Request]
    ) -> list[Node | CoordinatorError]:
        callers: dict[str | None, accounts.Caller | CoordinatorError] = {}
        for request in requests:
            if request.api_key not in callers:
                # Inside the unit of work: a key revoked a moment ago fails.
                try:
                    callers[request.api_key] = accounts.authenticate(
                        session, request.api_key
                    )
                except CoordinatorError as exc:
                    callers[request.api_key] = exc
        each = [callers[r.api_key] for r in requests]
        approved = iter(
            linking.approve_links(
                session,
                self._settings,
                [
                    linking.Approval(caller, request.code, request.name)
                    for caller, request in zip(each, requests, strict=True)
                    if not isinstance(caller, CoordinatorError)
                ],
            )
        )
        # In request order: a refused key's error, else the next approval's.
        return [
            caller if isinstance(caller, CoordinatorError) else next(approved)
            for caller in each
        ]


def _settle(waiting: _Waiting, outcome: Node | BaseException) -> None:
    if waiting.answer.done():
        return  # the caller gave up (cancelled); the approval stands
    if isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)

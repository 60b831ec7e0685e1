"""The life of a file as one table: which status may follow which (docs/ARCHITECTURE.md).

Every status change is a conditional UPDATE whose ``WHERE status IN (...)`` comes from
``sources()``, so a redelivered task, two workers racing on one file, a give-up racing a push,
or a delete racing anything end in one state.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, update
from sqlalchemy.orm import Session

from common.models import File, FileStatus, db_now, utcnow

S = FileStatus

TRANSITIONS: dict[FileStatus, frozenset[FileStatus]] = {
    # accepted and queued: a worker claims it, or a check decides at once
    S.PENDING: frozenset({S.PROCESSING, S.STORED, S.REJECTED, S.FAILED, S.DELETED}),
    # claimed: back to pending when the claim is released or its lease lapses
    S.PROCESSING: frozenset({S.PENDING, S.PROCESSING, S.STORED, S.REJECTED, S.FAILED, S.DELETED}),
    # requeued by an operator or beat; stored when a push outlived the give-up
    S.FAILED: frozenset({S.PENDING, S.STORED, S.DELETED}),
    S.STORED: frozenset({S.DELETED}),
    S.REJECTED: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}


def sources(to: FileStatus) -> tuple[FileStatus, ...]:
    """The statuses from which a file may move to ``to``."""
    return tuple(s for s, targets in TRANSITIONS.items() if to in targets)


def lease_lapsed() -> ColumnElement[bool]:
    """A ``processing`` file whose worker stopped renewing its claim."""
    return or_(File.lease_until.is_(None), File.lease_until < db_now())


def free_for(claim: str | None) -> ColumnElement[bool]:
    """Not held by a live claim of anyone but ``claim``: pending, or processing under
    ``claim`` itself or under a lapsed lease."""
    held = File.status == S.PROCESSING
    mine = File.claim == claim if claim is not None else false()
    return or_(~held, mine, lease_lapsed())


def transition(
    session: Session,
    file_id: int,
    to: FileStatus,
    guard: ColumnElement[bool] | None = None,
    **values,
) -> bool:
    """Move a file to ``to`` if the transition table allows it from its current status (and
    ``guard`` holds); False when another change got there first."""
    condition = [File.id == file_id, File.status.in_(sources(to))]
    if guard is not None:
        condition.append(guard)
    values = {"status": to, "updated_at": utcnow(), **values}
    result = session.execute(update(File).where(*condition).values(**values))
    return result.rowcount == 1

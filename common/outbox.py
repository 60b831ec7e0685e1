"""The outbox: work recorded in the same transaction as the change that needs it.

An entry exists while its work is outstanding and is removed in the transaction that finishes
the work, so a crash or a broker outage at any moment leaves the entry for the reconciler.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from common.models import OutboxEntry, OutboxKind, utcnow
from common.queue import DELETE_OBJECT, EXTRACT_METADATA, INGEST

TASK_FOR_KIND = {
    OutboxKind.INGEST: INGEST,
    OutboxKind.METADATA: EXTRACT_METADATA,
    OutboxKind.DELETE: DELETE_OBJECT,
}

#: An entry not yet marked published this long after it was written is published again.
UNSENT_GRACE = timedelta(seconds=5)


def add(session: Session, file_id: int, kind: OutboxKind) -> None:
    session.add(OutboxEntry(file_id=file_id, kind=kind))


def mark_published(session: Session, file_id: int, kind: OutboxKind) -> None:
    """Record that a task for this entry was handed to the broker just now."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.file_id == file_id, OutboxEntry.kind == kind)
        .values(published_at=utcnow(), publish_count=OutboxEntry.publish_count + 1)
    )


def touch(session: Session, file_id: int, kind: OutboxKind) -> None:
    """A worker is still on it (retrying): do not treat the entry as stale."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.file_id == file_id, OutboxEntry.kind == kind)
        .values(published_at=utcnow())
    )


def done(session: Session, file_id: int, kind: OutboxKind) -> None:
    session.execute(
        delete(OutboxEntry).where(OutboxEntry.file_id == file_id, OutboxEntry.kind == kind)
    )


def due(
    session: Session, *, stale_after: timedelta, limit: int, skip_locked: bool, now: datetime
) -> list[OutboxEntry]:
    """Entries never published (past a short grace) or published long ago and still open."""
    query = (
        select(OutboxEntry)
        .where(
            ((OutboxEntry.published_at.is_(None)) & (OutboxEntry.created_at < now - UNSENT_GRACE))
            | (OutboxEntry.published_at < now - stale_after)
        )
        .order_by(OutboxEntry.id)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))

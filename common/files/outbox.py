"""The outbox: work recorded in the same transaction as the change that needs it.

An entry exists while its work is outstanding and is removed in the transaction that finishes
the work, so a crash or a broker outage at any moment leaves the entry for the reconciler.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from datetime import timedelta

from sqlalchemy import ColumnElement, Insert, delete, insert, literal, select, type_coerce, update
from sqlalchemy.orm import Session

from common.db import core
from common.models import OPEN_STATES, File, OutboxEntry, OutboxKind, db_now

log = logging.getLogger(__name__)

#: An entry not yet marked published this long after it was written is published again.
UNSENT_GRACE = timedelta(seconds=5)


def add(session: Session, file_id: int, kind: OutboxKind) -> None:
    core(session).execute(_INSERT, {"file_id": file_id, "kind": kind})


_INSERT = insert(OutboxEntry)


def add_from(file_id: ColumnElement[int], kind: ColumnElement[str]) -> Insert:
    """``add`` as a statement for rows another statement yields (``file_id``, ``kind``: their
    columns or parameters), such as a new file's INSERT in a WITH (``states.create``)."""
    kind = type_coerce(kind, OutboxEntry.kind.type)
    columns = select(file_id, kind, db_now(), literal(0))
    names = ["file_id", "kind", "created_at", "publish_count"]
    return insert(OutboxEntry).from_select(names, columns)


def add_later(session: Session, file_id: int, kind: OutboxKind, seconds: float) -> None:
    """An entry due ``seconds`` from now: it is written as if created then, so the reconciler
    publishes it ``UNSENT_GRACE`` after that (``due``), and not before."""
    session.execute(
        insert(OutboxEntry).values(file_id=file_id, kind=kind, created_at=db_now(seconds))
    )


def add_many(session: Session, file_ids: list[int], kind: OutboxKind) -> None:
    """Entries for many files in one statement (bulk operations)."""
    if file_ids:
        session.execute(
            insert(OutboxEntry), [{"file_id": file_id, "kind": kind} for file_id in file_ids]
        )


def replace_with_delete(session: Session, file_ids: list[int]) -> None:
    """The files were deleted: the work left on them (ingest, metadata) is moot, and their
    objects are to be removed. A delivery still pushing one settles it by itself."""
    if file_ids:
        session.execute(
            delete(OutboxEntry)
            .where(OutboxEntry.file_id.in_(file_ids), OutboxEntry.kind != OutboxKind.DELETE)
            .execution_options(synchronize_session=False)
        )
        add_many(session, file_ids, OutboxKind.DELETE)


def mark_published(session: Session, file_ids: list[int], kind: OutboxKind, times: int = 1) -> None:
    """Record that tasks for these entries were handed to the broker (``times`` each). An
    entry not yet due (``add_later``) is not among them: it was written after that publish."""
    session.execute(
        update(OutboxEntry)
        .where(
            OutboxEntry.file_id.in_(file_ids),
            OutboxEntry.kind == kind,
            OutboxEntry.created_at <= db_now(),
        )
        .values(published_at=db_now(), publish_count=OutboxEntry.publish_count + times)
    )


def unmark_published(session: Session, file_ids: list[int], kind: OutboxKind) -> None:
    """Undo ``mark_published`` for entries whose publish did not reach the broker."""
    session.execute(
        update(OutboxEntry)
        .where(
            OutboxEntry.file_id.in_(file_ids),
            OutboxEntry.kind == kind,
            OutboxEntry.published_at.is_not(None),
        )
        .values(published_at=None, publish_count=OutboxEntry.publish_count - 1)
    )


def make_all_published_due(session: Session) -> int:
    """Every entry already published is to be published again (the broker lost its queues)."""
    result = session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.published_at.is_not(None))
        .values(published_at=None, created_at=db_now(-UNSENT_GRACE.total_seconds() - 1))
    )
    return result.rowcount


def make_due(session: Session, file_ids: list[int], kind: OutboxKind) -> None:
    """Entries to publish again at the reconciler's next look (this pass's, too), without
    waiting to go stale."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.file_id.in_(file_ids), OutboxEntry.kind == kind)
        .values(published_at=None, created_at=db_now(-UNSENT_GRACE.total_seconds() - 1))
    )


class PublishMarks:
    """Marks outbox entries published in batches, off the request path.

    Marking each publish in its own transaction cost an upload a second database commit. Here
    a background thread marks everything published in the last ``interval`` in one UPDATE per
    kind. A mark lost with its process (killed within ``interval``) only means the entry stays
    unmarked: the reconciler publishes it again after ``UNSENT_GRACE``, and a second delivery
    of a task is harmless.
    """

    def __init__(self, db, interval: float = 0.2) -> None:
        self.db = db
        self.interval = interval
        self._pending: list[tuple[int, OutboxKind]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = threading.Event()

    def add(self, file_id: int, kind: OutboxKind) -> None:
        with self._lock:
            self._pending.append((file_id, kind))
            if self._thread is None or self._pid != os.getpid():  # none yet, or forked
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, daemon=True, name="outbox-marks")
                self._thread.start()

    def flush(self) -> None:
        """Mark everything added so far (also called at exit and by tests)."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        # Group by how often each entry was published in the batch, so counts stay exact.
        groups: dict[tuple[OutboxKind, int], list[int]] = {}
        for (file_id, kind), times in Counter(pending).items():
            groups.setdefault((kind, times), []).append(file_id)
        try:
            with self.db.session() as session:
                for (kind, times), file_ids in groups.items():
                    mark_published(session, file_ids, kind, times)
        except Exception as exc:  # the reconciler republishes what stays unmarked
            log.warning("could not mark %d outbox entries published: %s", len(pending), exc)

    def close(self) -> None:
        """Stop the background thread (letting a flush under way finish), then mark the rest."""
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._closed.wait(self.interval):
            self.flush()


def touch(session: Session, file_id: int, kind: OutboxKind) -> None:
    """A worker is still on it (retrying): do not treat the entry as stale."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.file_id == file_id, OutboxEntry.kind == kind)
        .values(published_at=db_now())
    )


def done(session: Session, file_id: int, kind: OutboxKind) -> None:
    session.execute(
        delete(OutboxEntry).where(OutboxEntry.file_id == file_id, OutboxEntry.kind == kind)
    )


def hand_over(session: Session, file_id: int, done_kind: OutboxKind, next_kind: OutboxKind) -> None:
    """Finish ``done_kind`` and record ``next_kind`` in one statement: the entry becomes the
    next one, as if new (an entry that is already gone is simply added)."""
    result = core(session).execute(
        update(OutboxEntry)
        .where(OutboxEntry.file_id == file_id, OutboxEntry.kind == done_kind)
        .values(kind=next_kind, created_at=db_now(), published_at=None, publish_count=0)
    )
    if result.rowcount == 0:
        add(session, file_id, next_kind)


def restore_missing(session: Session, limit: int) -> list[int]:
    """Give an ingest entry, due at once, to unfinished files that have none; their ids.

    Every pending or processing file has one (written with the change that opened it); one
    without it would never be published again, so the reconciler checks and repairs.
    """
    has_entry = (
        select(OutboxEntry.id)
        .where(OutboxEntry.file_id == File.id, OutboxEntry.kind == OutboxKind.INGEST)
        .exists()
    )
    query = select(File.id).where(File.status.in_(OPEN_STATES), ~has_entry).limit(limit)
    file_ids = list(session.scalars(query))
    if file_ids:
        add_many(session, file_ids, OutboxKind.INGEST)
        make_due(session, file_ids, OutboxKind.INGEST)
    return file_ids


def due(
    session: Session, *, stale_after: timedelta, limit: int, skip_locked: bool
) -> list[OutboxEntry]:
    """Entries never published (past a short grace) or published long ago and still open,
    by the database's clock."""
    grace, stale = UNSENT_GRACE.total_seconds(), stale_after.total_seconds()
    query = (
        select(OutboxEntry)
        .where(
            (OutboxEntry.published_at.is_(None) & (OutboxEntry.created_at < db_now(-grace)))
            | (OutboxEntry.published_at < db_now(-stale))
        )
        .order_by(OutboxEntry.id)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))

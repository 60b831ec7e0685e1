"""The life of a file as one table: which status may follow which (docs/ARCHITECTURE.md), and
the only three ways a file changes as its owner sees it: ``create`` (a new upload), ``transition``
(a status) and ``change`` (metadata, a new name, labels); a worker's lease renewal is the one
other write of a file's row. Each records the change's event in the same
transaction (``file_events``), so there is no event of a change that rolled back and no change
without its event, whoever makes it: the API, a worker, the reconciler, a bulk action, the CLI.

Every status change is a conditional UPDATE whose ``WHERE status IN (...)`` comes from
``sources()``, so a redelivered task, two workers racing on one file, a give-up racing a push,
or a delete racing anything end in one state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import (
    ColumnElement,
    bindparam,
    false,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from common.db import core
from common.files import events, outbox, usage
from common.models import File, FileEvent, FileStatus, OutboxEntry, OutboxKind, db_now, utcnow

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


#: ``status IN (sources(to))`` for each ``to``, written as plain comparisons: compiled once
#: into SQLAlchemy's statement cache, where an IN list's parameters are expanded again at
#: every execution (a third of a transition's CPU, bench/RESULTS.md).
_FROM_SOURCES = {to: or_(*(File.status == s for s in sources(to))) for to in FileStatus}


def _files(ids: list[int]) -> ColumnElement[bool]:
    """``id IN (ids)``, or ``id = ?`` for one (a worker's every transition), for the same
    reason."""
    return File.id == ids[0] if len(ids) == 1 else File.id.in_(ids)


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
    file_ids: int | Iterable[int],
    to: FileStatus,
    guard: ColumnElement[bool] | None = None,
    **values,
) -> list[int]:
    """Move files to ``to`` where the transition table allows it from their current status (and
    ``guard`` holds): the one place a file's status is written, with its ``file.<status>``
    event in the same transaction. The ids of the files that moved (empty, so false, when
    another change got there first)."""
    ids = [file_ids] if isinstance(file_ids, int) else list(file_ids)
    if not ids:
        return []
    condition = [_files(ids), _FROM_SOURCES[to]]
    if guard is not None:
        condition.append(guard)
    values = {"status": to, "updated_at": utcnow(), **values}
    moved = _move(session, condition, values, f"file.{to}")
    usage.moved(session, moved, to)
    return [file_id for file_id, _owner, _size, _before in moved]


def _move(session: Session, condition: list, values: dict, event: str) -> list[tuple]:
    """The UPDATE of a transition and the ``event`` rows of the files it moved: rows of (id,
    owner id, size, status before) of the files that moved. Each row's status before is read
    with the row locked, so usage counts exactly what moved from where."""
    if session.get_bind().dialect.name == "postgresql":
        # One statement: lock the rows, move them, write their events (an INSERT reading the
        # UPDATE's rows in a WITH), return what each was.
        before = (
            select(File.id.label("id"), File.status.label("status"))
            .where(*condition)
            .with_for_update()
            .subquery("before")
        )
        moved = (
            update(File)
            .where(File.id == before.c.id, *condition)
            .values(**values)
            .returning(File.id, File.owner_id, File.size, before.c.status.label("before"))
            .cte("moved")
        )
        written = _events_of(moved, literal(event), literal(values["updated_at"]))
        rows = list(core(session).execute(select(moved).add_cte(written.cte("moved_events"))))
        if rows:
            events.wrote(session)  # the doorbell rings after the commit
        return rows
    # SQLite: the transaction holds the database's write lock from its start (BEGIN
    # IMMEDIATE, common.db), so what is read here is what the UPDATE moves.
    connection = core(session)
    was = dict(connection.execute(select(File.id, File.status).where(*condition)).all())
    statement = update(File).where(*condition).values(**values)
    rows = connection.execute(statement.returning(File.id, File.owner_id, File.size)).all()
    _record(session, [(file_id, owner) for file_id, owner, _size in rows], event)
    return [(file_id, owner, size, was[file_id]) for file_id, owner, size in rows]


#: The columns a new file's row is written with (the rest are NULL until the pipeline fills
#: them); ``create`` sets the ORM defaults of these on the object itself.
_NEW_FILE = (
    "owner_id", "name", "original_name", "search_name", "category", "extension", "size",
    "content_type", "status", "sha256", "extra", "attempts", "uploaded_at", "updated_at",
)  # fmt: skip
_INSERT_FILE = insert(File).returning(File.id)


def _create_with_work():
    """PostgreSQL: a new file's row, its event and its outbox entry as one statement (an INSERT
    whose row the other two INSERTs read in a WITH), so the upload's transaction is one round
    trip between its BEGIN and COMMIT instead of three."""
    row = {column: bindparam(column) for column in _NEW_FILE}
    new = insert(File).values(row).returning(File.id, File.owner_id).cte("new_file")
    event = _events_of(new, bindparam("event_type"), bindparam("event_at"))
    work = outbox.add_from(new.c.id, bindparam("work"))
    return work.returning(OutboxEntry.file_id).add_cte(event.cte("new_event"))


def _events_of(files, kind, at):
    """The INSERT of an event of type ``kind`` at ``at`` for each row of ``files`` (a WITH's
    rows with ``id`` and ``owner_id``): ``create`` and ``_move`` on PostgreSQL."""
    return insert(FileEvent).from_select(
        ["file_id", "owner_id", "type", "at"],
        select(
            files.c.id,
            files.c.owner_id,
            type_coerce(kind, FileEvent.type.type),
            type_coerce(at, FileEvent.at.type),
        ),
    )


_CREATE_WITH_WORK = _create_with_work()


def create(session: Session, file: File, work: OutboxKind | None = None) -> File:
    """Add a new file (``pending``), its ``file.pending`` event and, with ``work``, its outbox
    entry of that kind.

    Core INSERTs on the session's connection, not the unit of work: on the upload path that is
    ~1.5 ms of CPU less per upload (bench/RESULTS.md); on PostgreSQL the three are one
    statement (``_create_with_work``: ~0.4 ms of CPU and a round trip less again). ``file``
    stays a plain object the caller reads (never attached to the session, so nothing of it is
    flushed again); its id is the row's."""
    now = utcnow()
    file.attempts = file.attempts or 0
    file.uploaded_at = file.uploaded_at or now
    file.updated_at = file.updated_at or now
    if file.extra is None:
        file.extra = {}
    row = {column: getattr(file, column) for column in _NEW_FILE}
    kind = f"file.{file.status.value}"
    connection = core(session)
    if work is not None and connection.dialect.name == "postgresql":
        events.wrote(session)
        row |= {"event_type": kind, "event_at": now, "work": work}
        file.id = connection.execute(_CREATE_WITH_WORK, row).scalar_one()
    else:
        file.id = connection.execute(_INSERT_FILE, row).scalar_one()
        _record(session, [(file.id, file.owner_id)], kind)
        if work is not None:
            outbox.add(session, file.id, work)
    usage.uploaded(session, file.owner_id, file.size)
    return file


#: Changes of a file other than its status, each its own event type.
CHANGES = ("metadata", "renamed", "labels")


def change(
    session: Session,
    file_ids: int | Iterable[int],
    kind: str | None,
    guard: ColumnElement[bool] | None = None,
    **values,
) -> list[int]:
    """Change live files other than by status (``kind``: metadata, renamed, labels), with a
    ``file.<kind>`` event each (``kind`` None: a change nobody needs to hear of, no event):
    the files changed."""
    assert kind is None or kind in CHANGES, kind
    ids = [file_ids] if isinstance(file_ids, int) else list(file_ids)
    if not ids:
        return []
    condition = [File.id.in_(ids), File.status != S.DELETED]
    if guard is not None:
        condition.append(guard)
    statement = update(File).where(*condition).values(updated_at=utcnow(), **values)
    changed = session.execute(
        statement.returning(File.id, File.owner_id).execution_options(synchronize_session=False)
    ).all()
    if kind is not None:
        _record(session, changed, f"file.{kind}")
    return [file_id for file_id, _owner in changed]


_INSERT_EVENT = insert(FileEvent)


def _record(session: Session, files: Sequence[tuple[int, int | None]], kind: str) -> None:
    if files:
        at = utcnow()
        events.wrote(session)  # the doorbell rings after the commit
        # On the session's connection: the ORM's bulk-insert path costs more than the INSERT.
        core(session).execute(
            _INSERT_EVENT,
            [{"file_id": fid, "owner_id": owner, "type": kind, "at": at} for fid, owner in files],
        )

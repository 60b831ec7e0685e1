"""Events of files as their owners see them (docs/API.md, "Live status"): reading the event
table by id, and the doorbell rung after a commit that wrote events.

The table is the record (``common.files.states`` writes a row in the transaction of each
change); Redis only rings: ``Doorbell`` publishes on ``CHANNEL`` after such a commit, so that a
reader asks the table at once instead of at its next poll. A lost ring (Redis down, a process
that died between its commit and its ring) delays events until that poll, and loses none.

Ids are handed out when a row is inserted, before its transaction commits: a reader that has
seen id 7 may later see 6 commit. ``Gaps`` decides when a missing id can be passed: once no
transaction that began before the gap was seen still holds the table's write lock
(PostgreSQL: ``pg_locks``); on SQLite, writers take the database's lock one at a time
(``BEGIN IMMEDIATE``, common.db), so rows commit in id order and a gap is a rollback at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from common.fileinfo import iso_z
from common.files import labels, queries, render
from common.models import File, FileEvent, FileStatus, User

log = logging.getLogger(__name__)

#: The Redis channel rung after a commit that wrote events.
CHANNEL = "file-events"
#: A gap is passed after this long whatever the database says (a transaction that writes a
#: file's event runs for milliseconds; one this old is stuck, and its event is given up on).
GAP_PATIENCE = 30.0


class Doorbell:
    """Publishes on ``CHANNEL`` after commits that wrote events; never fails the commit."""

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(
            redis_url, socket_timeout=0.25, socket_connect_timeout=0.25
        )
        self._quiet_until = 0.0

    def ring(self) -> None:
        if time.monotonic() < self._quiet_until:  # Redis just failed: the poll covers it
            return
        try:
            self.redis.publish(CHANNEL, b"")
        except (redis.RedisError, OSError) as exc:
            self._quiet_until = time.monotonic() + 1.0
            log.warning("event doorbell not rung (readers poll within a second): %s", exc)

    def close(self) -> None:
        self.redis.close()


#: ``session.info`` key: the transaction wrote events (set by ``common.files.states``).
WROTE = "events.wrote"
#: ``session.info`` key: the doorbell of the session's database (``Database.ring_with``).
DOORBELL = "events.doorbell"


def wrote(session: Session) -> None:
    session.info[WROTE] = True


@event.listens_for(Session, "after_commit")
def _ring(session: Session) -> None:
    if session.info.pop(WROTE, False):
        doorbell = session.info.get(DOORBELL)
        if doorbell is not None:
            doorbell.ring()


@event.listens_for(Session, "after_rollback")
def _silent(session: Session) -> None:
    session.info.pop(WROTE, None)


@dataclass
class Event:
    id: int
    type: str
    at: Any
    file_id: int
    owner_id: int | None
    body: dict[str, Any]  # the event as clients get it


def latest_id(session: Session) -> int:
    return session.execute(select(func.coalesce(func.max(FileEvent.id), 0))).scalar_one()


def latest_at(session: Session, at: Any) -> int:
    """The highest id of the events that happened by ``at`` (0: none)."""
    query = select(func.coalesce(func.max(FileEvent.id), 0)).where(FileEvent.at <= at)
    return session.execute(query).scalar_one()


def oldest_id(session: Session) -> int | None:
    return session.execute(select(func.min(FileEvent.id))).scalar_one()


def read(
    session: Session,
    after: int,
    *,
    upto: int | None = None,
    owner_id: int | None = None,
    limit: int = 500,
    download_url: Callable[[Any], str | None],
) -> list[Event]:
    """Events with ids after ``after`` (up to ``upto``; of ``owner_id``'s files when given), in
    id order, each with its file as it stands now: the ``type`` says what changed, ``file``
    is the newest state (a client never acts on an older copy of a file than the API's)."""
    query = (
        select(FileEvent.id.label("event_id"), FileEvent.type, FileEvent.at, *queries.LISTED)
        .add_columns(User.username.label("owner"))
        .join(File, File.id == FileEvent.file_id)
        .outerjoin(User, User.id == File.owner_id)
        .where(FileEvent.id > after)
        .order_by(FileEvent.id)
        .limit(limit)
    )
    if upto is not None:
        query = query.where(FileEvent.id <= upto)
    if owner_id is not None:
        query = query.where(FileEvent.owner_id == owner_id)
    rows = session.execute(query).all()
    tags = labels.tags_of(session, {row.id for row in rows})
    events = []
    for row in rows:
        url = download_url(row) if row.status == FileStatus.STORED else None
        body = {
            "id": row.event_id,
            "type": row.type,
            "at": iso_z(row.at),
            "file": render.file_object_v2(row, url, tags[row.id]),
        }
        events.append(Event(row.event_id, row.type, row.at, row.id, row.owner_id, body))
    return events


def present(session: Session, first: int, last: int) -> bool:
    """Whether any id from ``first`` to ``last`` is in the table now."""
    query = select(FileEvent.id).where(FileEvent.id >= first, FileEvent.id <= last).limit(1)
    return session.execute(query).first() is not None


class Gaps:
    """Missing ids below the highest one read (each gap by its first id), and whether the
    reader may pass one yet."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[float, Any]] = {}  # first id -> (when, database time)

    def settled(self, session: Session, first: int) -> bool:
        """Whether no transaction can still commit the gap starting at ``first``.

        The id was handed out by a transaction inserting into ``file_events``, which holds that
        table's ROW EXCLUSIVE lock until it ends and began before the gap was first seen (a
        higher id was committed by then). So once no transaction that began by then holds the
        lock, nobody can fill the gap. Transactions on other tables, and in other databases
        of the server, never hold it up."""
        if session.get_bind().dialect.name != "postgresql":
            return True  # one writer at a time: ids commit in order, a gap is a rollback
        now = time.monotonic()
        if first not in self._seen:
            self._seen[first] = (now, session.scalar(text("SELECT statement_timestamp()")))
        since, seen_at = self._seen[first]
        if now - since > GAP_PATIENCE:
            log.warning("events from id %d given up on after %.0f s", first, now - since)
            return True
        return not _writers_since(session, seen_at)

    def forget(self, upto: int) -> None:
        for first in [first for first in self._seen if first <= upto]:
            del self._seen[first]


def _writers_since(session: Session, seen_at: Any) -> int:
    """Transactions that began by ``seen_at`` and still hold ``file_events``' ROW EXCLUSIVE
    lock (one whose start this role may not see counts too: a wait, never a skip)."""
    return session.execute(
        text(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
            " WHERE l.locktype = 'relation' AND l.relation = CAST('file_events' AS regclass)"
            # pg_locks lists every database's locks, and a table's oid in one database may be
            # another's table (databases made from one template share their oids).
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()"
            " AND (a.xact_start IS NULL OR a.xact_start <= :seen_at)"
        ),
        {"seen_at": seen_at},
    ).scalar_one()

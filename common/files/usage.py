"""Usage of each account, counted in the transactions that do the work (docs/API.md, "Usage"):
running totals of live files and bytes by status (``usage_totals``) and what happened each day
(``usage_daily``: uploads, upload bytes, downloads, deletes, rejected, failed). The state table
(``common.files.states``) counts every upload and status change here; nothing scans files,
except ``drift()``, the operator's check that the counters match them.

Counters are upserts (``INSERT ... ON CONFLICT DO UPDATE`` adding the change), made in a fixed
order of (account, key), so that concurrent transactions lock an account's rows in one order and
count exactly: 200 parallel uploads add 200.

An account's counter rows are shared by all its uploads, so each transaction holds them from its
first counter statement until it commits, and the account's other uploads queue behind it. The
changes are therefore gathered on the session and written as its last statements, just before
COMMIT (``_write``, a ``before_commit`` hook): the rows are held for the commit alone, not for the
file's own statements. (Held for longer, a program's many parallel uploads queued on them past
DATABASE_TIMEOUT under load and were answered 503.) ``admit`` is the one immediate write: it
must refuse before the transaction commits, and its caller makes it the transaction's last
statement but these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date

from sqlalchemy import event, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.models import File, FileStatus, UsageDay, UsageTotal, User, utcnow

#: The daily counter a status change adds to.
DAILY_FOR = {
    FileStatus.REJECTED: "rejected",
    FileStatus.FAILED: "failed",
    FileStatus.DELETED: "deletes",
}
DAILY = ("uploads", "upload_bytes", "downloads", "deletes", "rejected", "failed")


def _upsert(session: Session, model, keys: dict, deltas: dict[str, int]) -> None:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model).values(**keys, **deltas)
    table = model.__table__
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.c[name] + statement.excluded[name] for name in deltas},
    )
    session.execute(statement)


#: The statuses whose bytes an account's quota holds.
HELD = frozenset({FileStatus.PENDING, FileStatus.PROCESSING, FileStatus.STORED})
MIB = 1024 * 1024


class QuotaExceeded(Exception):
    """The upload would take its owner past the quota: ``used`` and ``quota`` in bytes."""

    def __init__(self, used: int, quota: int, size: int) -> None:
        super().__init__(f"{used} + {size} bytes would pass the quota of {quota}")
        self.used, self.quota, self.size = used, quota, size


def _quota_bytes(default_mb: int):
    return func.coalesce(User.quota_mb, default_mb) * MIB


def admit(session: Session, owner_id: int | None, size: int, default_mb: int) -> None:
    """Take ``size`` bytes of the owner's quota for a new upload, or raise ``QuotaExceeded``:
    one conditional UPDATE, so concurrent uploads can never both slip under it."""
    if owner_id is None:
        return
    room = or_(
        func.coalesce(User.quota_mb, default_mb) == 0,
        User.used_bytes + size <= _quota_bytes(default_mb),
    )
    taken = session.execute(
        update(User)
        .where(User.id == owner_id, room)
        .values(used_bytes=User.used_bytes + size)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        room = room_of(session, owner_id, default_mb)
        if room is None:  # no such account: the file's foreign key refuses it next
            return
        raise QuotaExceeded(*room, size)


def release(session: Session, owner_id: int, size: int) -> None:
    """Give back ``size`` bytes taken by ``admit`` for work that never became a file (a direct
    upload aborted or expired)."""
    session.execute(
        update(User)
        .where(User.id == owner_id)
        .values(used_bytes=User.used_bytes - size)
        .execution_options(synchronize_session=False)
    )


def room_of(session: Session, owner_id: int, default_mb: int) -> tuple[int, int] | None:
    """An account's (used bytes, quota in bytes; 0: none); None when there is no account."""
    found = session.execute(
        select(User.used_bytes, func.coalesce(User.quota_mb, default_mb)).where(User.id == owner_id)
    ).first()
    return None if found is None else (found[0], found[1] * MIB)


def uploaded(session: Session, owner_id: int | None, size: int) -> None:
    """A new upload (``pending``) of ``size`` bytes."""
    if owner_id is None:  # open v1: nobody's account
        return
    counts = _counts(session)
    counts.add_total((owner_id, FileStatus.PENDING.value), 1, size)
    counts.daily[owner_id].update({"uploads": 1, "upload_bytes": size})


def moved(
    session: Session,
    rows: Iterable[tuple[int, int | None, int, FileStatus]],
    to: FileStatus,
) -> None:
    """Files moved to ``to``: rows of (file id, owner id, size, status before)."""
    counts = _counts(session)
    for _file_id, owner_id, size, before in rows:
        if owner_id is None or before == to:
            continue
        counts.add_total((owner_id, FileStatus(before).value), -1, -size)
        if to is not FileStatus.DELETED:  # deleted files are no longer counted
            counts.add_total((owner_id, to.value), 1, size)
        if to in DAILY_FOR:
            counts.daily[owner_id][DAILY_FOR[to]] += 1
        counts.held[owner_id] += size * ((to in HELD) - (FileStatus(before) in HELD))


def downloaded(session: Session, owner_id: int | None) -> None:
    """A download URL issued for a file of ``owner_id``."""
    if owner_id is not None:
        _counts(session).daily[owner_id]["downloads"] += 1


class _Counts:
    """The counter changes of one transaction, written just before it commits."""

    def __init__(self) -> None:
        self.held: Counter = Counter()  # account -> change of its used bytes
        self.totals: dict[tuple[int, str], tuple[int, int]] = {}  # (account, status) -> change
        self.daily: defaultdict[int, Counter] = defaultdict(Counter)  # account -> counts

    def add_total(self, key: tuple[int, str], files: int, size: int) -> None:
        before = self.totals.get(key, (0, 0))
        self.totals[key] = (before[0] + files, before[1] + size)

    def write(self, session: Session) -> None:
        # The account's row, then its totals, then its day: the order every transaction takes.
        for owner_id, change in sorted(self.held.items()):
            if change:
                session.execute(
                    update(User)
                    .where(User.id == owner_id)
                    .values(used_bytes=User.used_bytes + change)
                    .execution_options(synchronize_session=False)
                )
        _totals(session, self.totals)
        _daily(session, self.daily)


_PENDING = "usage.counts"


def _counts(session: Session) -> _Counts:
    return session.info.setdefault(_PENDING, _Counts())


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    counts = session.info.pop(_PENDING, None)
    if counts is not None:
        counts.write(session)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _totals(session: Session, changes: dict[tuple[int, str], tuple[int, int]]) -> None:
    for (owner_id, status), (files, size) in sorted(changes.items()):
        if files or size:
            keys = {"user_id": owner_id, "status": status}
            _upsert(session, UsageTotal, keys, {"files": files, "bytes": size})


def _daily(session: Session, changes: dict) -> None:
    today = utcnow().date()
    for owner_id, counts in sorted(changes.items()):
        if counts:
            _upsert(session, UsageDay, {"user_id": owner_id, "day": today}, dict(counts))


def totals_of(session: Session, owner_id: int) -> dict[FileStatus, tuple[int, int]]:
    """An account's live files by status: (how many, their bytes)."""
    query = select(UsageTotal.status, UsageTotal.files, UsageTotal.bytes).where(
        UsageTotal.user_id == owner_id
    )
    return {FileStatus(status): (files, size) for status, files, size in session.execute(query)}


def days_of(session: Session, owner_id: int, first: date, last: date) -> list[UsageDay]:
    """An account's days from ``first`` to ``last`` (inclusive) with anything counted."""
    query = (
        select(UsageDay)
        .where(UsageDay.user_id == owner_id, UsageDay.day >= first, UsageDay.day <= last)
        .order_by(UsageDay.day)
    )
    return list(session.scalars(query))


def accounts_page(session: Session, after: int, limit: int) -> list[tuple[int, str]]:
    """Live accounts with ids after ``after``, by id: (id, username); one more than ``limit``
    (is there another page?)."""
    query = (
        select(User.id, User.username)
        .where(User.deleted_at.is_(None), User.id > after)
        .order_by(User.id)
        .limit(limit + 1)
    )
    return [tuple(row) for row in session.execute(query)]


def totals_of_many(session: Session, user_ids: list[int]) -> dict[int, dict]:
    """Totals of several accounts at once: {user id: {status: (files, bytes)}}."""
    found: dict[int, dict] = {user_id: {} for user_id in user_ids}
    query = select(UsageTotal.user_id, UsageTotal.status, UsageTotal.files, UsageTotal.bytes)
    for user_id, status, files, size in session.execute(
        query.where(UsageTotal.user_id.in_(user_ids))
    ):
        found[user_id][FileStatus(status)] = (files, size)
    return found


def drift(session: Session) -> list[dict]:
    """Where the running totals differ from the files themselves (the operator's check; it
    scans every live file): one entry per account and status that differs.

    Both are read from one snapshot: on PostgreSQL a REPEATABLE READ transaction (at READ
    COMMITTED, a change committed between the two reads was taken for drift); SQLite's
    transaction holds the database from its first statement."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    counted = {
        (user_id, status): (files, size)
        for user_id, status, files, size in session.execute(
            select(UsageTotal.user_id, UsageTotal.status, UsageTotal.files, UsageTotal.bytes)
        )
        if files or size
    }
    actual = {
        (owner_id, status.value): (files, int(size))
        for owner_id, status, files, size in session.execute(
            select(File.owner_id, File.status, func.count(), func.coalesce(func.sum(File.size), 0))
            .where(File.owner_id.is_not(None), File.status != FileStatus.DELETED)
            .group_by(File.owner_id, File.status)
        )
    }
    found = []
    for key in sorted(counted.keys() | actual.keys()):
        if counted.get(key, (0, 0)) != actual.get(key, (0, 0)):
            user_id, status = key
            found.append(
                {
                    "user_id": user_id,
                    "status": status,
                    "counted": list(counted.get(key, (0, 0))),
                    "actual": list(actual.get(key, (0, 0))),
                }
            )
    return found

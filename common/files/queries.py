"""Reading files: which are live, whose a caller may see, listings and counts. Every API
version's routes and the CLI read through these; they write nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    false,
    func,
    literal,
    select,
    true,
    tuple_,
)
from sqlalchemy.orm import Session, aliased

from common.files import labels
from common.models import (
    File,
    FileStatus,
    FileTag,
    OutboxEntry,
    Tag,
    User,
    identity_key,
    search_key,
)

#: Every status a file has until it is deleted.
LIVE_STATUSES = tuple(s for s in FileStatus if s is not FileStatus.DELETED)

#: What a file object shows: a listing reads these columns as plain rows, without building
#: (and tracking) an ORM object per file, most of the cost of a page of 100.
LISTED = (
    File.id,
    File.owner_id,
    File.name,
    File.original_name,
    File.size,
    File.content_type,
    File.status,
    File.uploaded_at,
    File.stored_at,
    File.etag,
    File.sha256,
    File.extra,
    File.error,
    File.category,
)
#: LISTED with the owner's username (``owner``), for the v2 file object.
LISTED_WITH_OWNER = (*LISTED, User.username.label("owner"))

#: Generated names are [0-9a-z_.] only (common.naming): a prefix of any other character
#: matches nothing, and never reaches SQL.
_NAME_PREFIX = re.compile(r"[0-9a-z_.]{0,64}")


def live_files() -> ColumnElement[bool]:
    """A file that is not deleted: what every listing, count and lookup shows."""
    return File.status != FileStatus.DELETED


def visible_to(user_id: int | None, *, is_admin: bool = False) -> ColumnElement[bool]:
    """The files a caller may act on: their own (admins: all); without a caller (open v1),
    the ownerless ones. Anything else is answered as missing."""
    if user_id is None:
        return File.owner_id.is_(None)
    if is_admin:
        return true()
    return File.owner_id == user_id


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def starts_with(column, prefix: str) -> ColumnElement[bool]:
    """``column`` begins with ``prefix``, taken literally (``%`` and ``_`` are no wildcards);
    served by an index on ``column``."""
    return column.like(_escaped(prefix) + "%", escape="\\")


def contains(column, needle: str) -> ColumnElement[bool]:
    """``needle`` anywhere in ``column``, taken literally."""
    return column.like(f"%{_escaped(needle)}%", escape="\\")


def name_prefix(prefix: str) -> ColumnElement[bool]:
    """The stored name starts with ``prefix`` (v1's and v2's ``prefix``)."""
    if not _NAME_PREFIX.fullmatch(prefix):
        return false()
    return starts_with(File.name, prefix) if prefix else true()


def with_owner(query: Select) -> Select:
    return query.outerjoin(User, User.id == File.owner_id)


def file_row(session: Session, condition: ColumnElement[bool], *, live: bool = True) -> Row | None:
    """The live file (with ``live=False``: also a deleted one) that ``condition`` selects, as
    LISTED_WITH_OWNER."""
    query = with_owner(select(*LISTED_WITH_OWNER)).where(condition)
    file = session.execute(query).first()
    if file is None or (live and file.status is FileStatus.DELETED):
        return None
    return file


def file_named(session: Session, name: str, visible: ColumnElement[bool]) -> Row | None:
    """The live file called ``name`` among those ``visible`` selects (LISTED_WITH_OWNER)."""
    return file_row(session, (File.name == name) & visible)


def file_by_id(session: Session, file_id: int) -> Row:
    """A file as it is now, deleted or not (LISTED_WITH_OWNER)."""
    return file_row(session, File.id == file_id, live=False)


def named(session: Session, names: Iterable[str], visible: ColumnElement[bool]) -> dict[str, int]:
    """The ids of the live files among ``names`` that ``visible`` selects, by name."""
    query = select(File.name, File.id).where(File.name.in_(list(names)), live_files(), visible)
    return dict(session.execute(query).all())


def live_ids_of(session: Session, owner_id: int, limit: int) -> list[int]:
    """Up to ``limit`` ids of an owner's live files."""
    query = select(File.id).where(File.owner_id == owner_id, live_files()).limit(limit)
    return list(session.scalars(query))


def by_name(session: Session, prefix: str, limit: int, visible: ColumnElement[bool]) -> list[Row]:
    """v1's listing: live files ``visible`` selects whose name starts with ``prefix``, in name
    (so upload) order."""
    query = select(*LISTED).where(live_files(), visible, name_prefix(prefix))
    return list(session.execute(query.order_by(File.name).limit(limit)).all())


def tag_counts(session: Session, owner_id: int) -> list[tuple[str, int]]:
    """An owner's tags, each with how many of their live files carry it, by name."""
    query = (
        select(Tag.name, func.count())
        .join(FileTag, FileTag.tag_id == Tag.id)
        .join(File, File.id == FileTag.file_id)
        .where(File.owner_id == owner_id, live_files())
        .group_by(Tag.name)
        .order_by(Tag.name)
    )
    return [tuple(row) for row in session.execute(query)]


def category_counts(session: Session, owner_id: int) -> list[tuple[str, int]]:
    """An owner's categories, each with how many of their live files are in it, by name."""
    query = (
        select(File.category, func.count())
        .where(File.owner_id == owner_id, live_files(), File.category.is_not(None))
        .group_by(File.category)
        .order_by(File.category)
    )
    return [tuple(row) for row in session.execute(query)]


def failed_named(session: Session, names: Iterable[str] = ()) -> list[tuple[int, str]]:
    """Failed files (those of ``names``; all when none is given): (id, name)."""
    query = select(File.id, File.name).where(File.status == FileStatus.FAILED)
    names = list(names)
    if names:
        query = query.where(File.name.in_(names))
    return [tuple(row) for row in session.execute(query)]


def count_by_status(session: Session) -> dict[FileStatus, int]:
    """How many files have each status (deleted ones too)."""
    return dict(session.execute(select(File.status, func.count()).group_by(File.status)).all())


def totals(session: Session) -> dict[str, dict[str, int]]:
    """Files by status and outstanding outbox entries by kind (the ``stats`` command)."""
    files = count_by_status(session)
    entries = session.execute(select(OutboxEntry.kind, func.count()).group_by(OutboxEntry.kind))
    return {
        "files": {status.value: files.get(status, 0) for status in FileStatus},
        "outbox": {kind.value: count for kind, count in entries},
    }


# Listings of v2: filters, sorting, keyset pages.

#: Sort keys and their columns; the file id breaks ties, so every order is total.
SORT_COLUMNS = {
    "uploaded_at": File.uploaded_at,
    "name": File.name,
    "original_name": File.original_name,
    "size": File.size,
}


@dataclass(frozen=True)
class Filters:
    """A listing's filters in normal form (tags and category normalised, the search text as
    names are compared): what narrows it and what a cursor is bound to."""

    statuses: list[str] = field(default_factory=lambda: [s.value for s in LIVE_STATUSES])
    tags: list[str] = field(default_factory=list)
    category: str | None = None
    q: str | None = None
    prefix: str | None = None
    content_type: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None

    @classmethod
    def normal(cls, *, tags=(), category=None, statuses=(), q=None, **given) -> Filters:
        """Filters as a caller gave them; ``labels.InvalidLabel`` for a bad tag or category."""
        content_type = given.pop("content_type", None)
        return cls(
            statuses=sorted(set(statuses)) or [s.value for s in LIVE_STATUSES],
            tags=sorted({labels.normalise(tag) for tag in tags}),
            category=labels.normalise(category) if category is not None else None,
            q=search_key(q) if q is not None else None,
            content_type=content_type.lower() if content_type is not None else None,
            **given,
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        """Every filter as a condition (the tags apart: see ``Page``)."""
        found = [File.status.in_(self.statuses)]
        if self.q is not None:
            found.append(contains(File.search_name, self.q))
        if self.prefix is not None:
            found.append(name_prefix(self.prefix))
        if self.category is not None:
            found.append(File.category == self.category)
        if self.content_type is not None:
            if self.content_type.endswith("/*"):
                found.append(starts_with(File.content_type, self.content_type[:-1]))
            else:
                found.append(File.content_type == self.content_type)
        if self.min_size is not None:
            found.append(File.size >= self.min_size)
        if self.max_size is not None:
            found.append(File.size <= self.max_size)
        if self.uploaded_after is not None:
            found.append(File.uploaded_at > self.uploaded_after)
        if self.uploaded_before is not None:
            found.append(File.uploaded_at < self.uploaded_before)
        return found

    def binding(self) -> dict[str, Any]:
        """The filters a cursor is bound to (those given; statuses, tags, category always)."""
        bound: dict[str, Any] = {
            "status": self.statuses,
            "tag": self.tags,
            "category": self.category,
        }
        for name in ("q", "prefix", "content_type", "min_size", "max_size"):
            if getattr(self, name) is not None:
                bound[name] = getattr(self, name)
        for name in ("uploaded_after", "uploaded_before"):
            if getattr(self, name) is not None:
                bound[name] = getattr(self, name).isoformat()
        return bound


@dataclass(frozen=True)
class Owner:
    """Whose files a listing shows: a condition, a key for the cursor, the username (None:
    several owners, read with each file)."""

    condition: ColumnElement[bool]
    key: Any
    username: str | None


def owner_of_listing(
    session: Session, name: str | None, user_id: int, username: str, *, is_admin: bool
) -> Owner:
    """The owner a listing asks for by ``name``: the caller's own when None or theirs;
    ``*``, everyone's. Only an admin asks for anyone else's (the caller checks that)."""
    if name is None or name == username:
        return Owner(File.owner_id == user_id, user_id, username)
    if name == "*":
        return Owner(visible_to(user_id, is_admin=is_admin), "*", None)
    key = identity_key(name)
    found = session.execute(select(User.id, User.username).where(User.username_key == key)).first()
    if found is None:  # nobody of that name: no files (never the ownerless ones)
        return Owner(false(), f"unknown:{key}", name)
    return Owner(File.owner_id == found.id, found.id, found.username)


@dataclass
class Page:
    """One page's query (a row more than the limit: is there more?). Built apart from the
    route so the bench can EXPLAIN exactly what runs."""

    query: Select
    column: Any

    @classmethod
    def of(
        cls,
        owner: Owner,
        filters: Filters,
        sort: str,
        limit: int,
        after: tuple[Any, int] | None = None,
    ) -> Page:
        descending = sort.startswith("-")
        column = SORT_COLUMNS[sort.lstrip("-")]
        tags = filters.tags
        if owner.key == "*":
            query = with_owner(select(*LISTED_WITH_OWNER))
        else:  # one owner, whose name is known: no join
            query = select(*LISTED, literal(owner.username).label("owner"))
        key_column, id_column = column, File.id
        if tags and column is File.uploaded_at and isinstance(owner.key, int):
            # Driven by the first tag's links, which carry the owner and upload time: the
            # page is an index range of file_tags, however many files have the tag.
            link = aliased(FileTag)
            query = query.select_from(link).join(File, File.id == link.file_id)
            query = query.where(link.tag_id == _tag_id(tags[0]), link.owner_id == owner.key)
            key_column, id_column = link.uploaded_at, link.file_id
            tags = tags[1:]
        query = query.where(owner.condition, *filters.conditions())
        if tags:
            owner_id = owner.key if isinstance(owner.key, int) else None
            query = query.where(_tagged_all(tags, owner_id))
        if after is not None:
            key, file_id = after
            query = query.where(_after(key_column, id_column, key, file_id, descending))
        order = (
            (key_column.desc(), id_column.desc())
            if descending
            else (key_column.asc(), id_column.asc())
        )
        return cls(query.order_by(*order).limit(limit + 1), column)


def page_rows(session: Session, query: Select) -> list[Row]:
    """The rows of a page's query (``Page.query``: one more than the page holds)."""
    return list(session.execute(query).all())


def _tag_id(name: str):
    return select(Tag.id).where(Tag.name == name).scalar_subquery()


def _tagged_all(names: list[str], owner: int | None) -> ColumnElement[bool]:
    """The file has every tag of ``names``: one grouped subquery however many there are (a
    subquery a tag made PostgreSQL's planning time grow steeply: 20 tags, 277 ms of planning
    and 241 of execution over 20,000 files; this: under 1 ms of planning, 50-90 ms of
    execution for 2 to 20 tags). Within one owner's links when the listing has one owner."""
    links = select(FileTag.file_id).join(Tag, Tag.id == FileTag.tag_id).where(Tag.name.in_(names))
    if owner is not None:
        links = links.where(FileTag.owner_id == owner)
    grouped = links.group_by(FileTag.file_id).having(func.count() == len(names))
    return File.id.in_(grouped)


def _after(column, id_column, key: Any, file_id: int, descending: bool) -> ColumnElement[bool]:
    """Rows after (key, id) in the listing's order: one row comparison, served by an index."""
    this = tuple_(column, id_column)
    that = tuple_(literal(key, column.type), literal(file_id))
    return this < that if descending else this > that

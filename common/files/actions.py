"""Changes of a file other than its life in the pipeline: its display name, category and tags,
one at a time (PATCH) or many at once (bulk). Each is one named function, in one transaction,
used by every caller alike; a file's status changes only in ``common.files.pipeline`` (through
``states.transition``).

Errors are the domain's: ``labels.InvalidLabel`` (a bad or one too many label), ``FileGone``
(deleted meanwhile), ``ExtensionChanged``; the API turns them into its replies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from common.db import Database
from common.files import labels, states, usage
from common.models import FileTag, Tag, search_key
from common.naming import clean_original_name, extension_of

#: A value of ``FileChange`` that is not given (None is a value: "no category").
UNCHANGED = object()


class FileGone(Exception):
    """The file was deleted while the change was on its way."""


class ExtensionChanged(ValueError):
    """A new display name must keep the file's extension: a file is never offered for
    download as another type than it was verified to be."""

    def __init__(self, extension: str) -> None:
        super().__init__(f"the extension must stay .{extension}")
        self.extension = extension


@dataclass(frozen=True)
class FileChange:
    """What a PATCH asks for, labels already in normal form (``labels.normalise``)."""

    original_name: str | None = None
    category: object = UNCHANGED
    tags: list[str] | None = None  # the whole set, replacing the current one
    add_tags: list[str] = ()
    remove_tags: list[str] = ()


def renamed(current: str, given: str) -> str:
    """A new display name, cleaned as an upload's is, keeping ``current``'s extension."""
    cleaned = clean_original_name(given)
    if extension_of(cleaned) != extension_of(current):
        raise ExtensionChanged(extension_of(current))
    return cleaned


def do_update_file(db: Database, file_id: int, original_name: str, change: FileChange) -> list[str]:
    """Apply ``change`` to a live file (``original_name``: its current display name) under its
    row lock; the file's tags after. ``InvalidLabel`` beyond MAX_TAGS, ``FileGone`` when it
    was deleted meanwhile, ``ExtensionChanged`` for a name of another type."""
    values: dict[str, object] = {}
    if change.category is not UNCHANGED:
        values["category"] = change.category
    if change.original_name is not None:
        values["original_name"] = renamed(original_name, change.original_name)
        values["search_name"] = search_key(values["original_name"])
    with db.session() as session:
        labels.lock_files(session, [file_id])
        current = labels.tags_of(session, [file_id])[file_id]
        kept = current if change.tags is None else change.tags
        wanted = sorted((set(kept) | set(change.add_tags)) - set(change.remove_tags))
        if len(wanted) > labels.MAX_TAGS:
            problem = f"a file has at most {labels.MAX_TAGS} tags"
            raise labels.InvalidLabel(",".join(wanted), problem)
        relabelled = "category" in values or set(wanted) != set(current)
        kinds = ["renamed"] * ("original_name" in values) + ["labels"] * relabelled
        # One event a kind of change (a PATCH that changes nothing records none).
        for kind in kinds or [None]:
            if not states.change(session, file_id, kind, **values):
                raise FileGone
            values = {}
        if set(wanted) != set(current):
            labels.unlink(session, [file_id], sorted(set(current) - set(wanted)))
            ids = labels.tag_ids(session, sorted(set(wanted) - set(current)))
            labels.link(session, [(file_id, tag_id) for tag_id in ids.values()])
    return wanted


def do_tag_files(db: Database, files: dict[str, int], tags: list[str]) -> set[str]:
    """Add ``tags`` to every file of ``files`` (name: id) that stays within MAX_TAGS; the
    names of those that would not (left as they were)."""
    with db.session() as session:
        labels.lock_files(session, files.values())
        rows = session.execute(
            select(FileTag.file_id, Tag.name)
            .join(Tag, Tag.id == FileTag.tag_id)
            .where(FileTag.file_id.in_(list(files.values())))
        ).all()
        current: dict[int, set[str]] = {}
        for file_id, name in rows:
            current.setdefault(file_id, set()).add(name)
        over = {
            name
            for name, file_id in files.items()
            if len(current.get(file_id, set()) | set(tags)) > labels.MAX_TAGS
        }
        ids = labels.tag_ids(session, tags)
        tagged = [file_id for name, file_id in files.items() if name not in over]
        labels.link(session, [(file_id, ids[tag]) for file_id in tagged for tag in tags])
        states.change(session, tagged, "labels")
    return over


def do_untag_files(db: Database, file_ids: Iterable[int], tags: list[str]) -> None:
    """Take ``tags`` off the files ``file_ids``."""
    with db.session() as session:
        labels.unlink(session, list(file_ids), tags)
        states.change(session, file_ids, "labels")


def do_set_category(db: Database, file_ids: Iterable[int], category: str | None) -> None:
    """Put the files ``file_ids`` in ``category`` (None: in none)."""
    with db.session() as session:
        states.change(session, file_ids, "labels", category=category)


def do_count_download(db: Database, owner_id: int | None) -> None:
    """A download URL was issued for a file of ``owner_id`` (its usage counts downloads)."""
    if owner_id is not None:
        with db.session() as session:
            usage.downloaded(session, owner_id)

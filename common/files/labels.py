"""Tags and categories (docs/API.md, "Tags and categories"): normalised, validated, stored.

A label is kept as Unicode NFKC with case folding, trimmed: ``Отчёт``, ``ОТЧЁТ`` and
``ｏｔｃｈｅｔ``-style full-width spellings are one label. It has 1-50 characters, each a
letter, a digit, ``-``, ``_`` or ``.``; a file has at most 20 tags. Tags live in a table of
their own, linked to files by ``file_tags``, so "files with tag X" is an index lookup.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from common.models import File, FileTag, Tag

MAX_LENGTH = 50
MAX_TAGS = 20


class InvalidLabel(ValueError):
    """A tag or category the service does not accept; ``label`` is what was given."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(reason)
        self.label, self.reason = label, reason


def normalise(raw: str) -> str:
    """The stored form of a tag or category; ``InvalidLabel`` when it is not one."""
    if not isinstance(raw, str):
        raise InvalidLabel(str(raw), "a label is a string")
    label = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", raw).casefold()).strip()
    if not 1 <= len(label) <= MAX_LENGTH:
        raise InvalidLabel(raw, f"a label has 1 to {MAX_LENGTH} characters")
    if not all(_allowed(ch) for ch in label) or unicodedata.category(label[0])[0] == "M":
        raise InvalidLabel(raw, "a label has only letters, digits, '-', '_' and '.'")
    return label


def _allowed(ch: str) -> bool:
    """A letter or digit of any script, with the marks that belong to it (the vowel signs and
    viramas of ``हिंदी`` or ``தமிழ்`` are marks, not letters), or ``-``, ``_``, ``.``."""
    return ch.isalnum() or ch in "-_." or unicodedata.category(ch)[0] == "M"


def lock_files(session: Session, file_ids: Iterable[int]) -> None:
    """Hold the files' rows until the transaction ends, so two changes of one file's tags
    (a PATCH, a bulk action) count its tags one after the other (PostgreSQL; SQLite's
    transactions already take the whole database)."""
    ids = sorted(set(file_ids))
    if ids and session.get_bind().dialect.name == "postgresql":
        session.execute(select(File.id).where(File.id.in_(ids)).order_by(File.id).with_for_update())


def normalise_all(raws: Iterable[str]) -> list[str]:
    """Normalised, without repeats, sorted; at most MAX_TAGS."""
    labels = sorted({normalise(raw) for raw in raws})
    if len(labels) > MAX_TAGS:
        raise InvalidLabel(",".join(labels), f"a file has at most {MAX_TAGS} tags")
    return labels


def split(values: Iterable[str]) -> list[str]:
    """Tags as an upload's form gives them: comma-separated, or the part repeated."""
    return [part for value in values for part in value.split(",") if part.strip()]


def tag_ids(session: Session, names: Iterable[str]) -> dict[str, int]:
    """The ids of ``names`` (normalised), creating the tags that do not exist yet."""
    names = sorted(set(names))
    if not names:
        return {}
    found = dict(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(names))).all())
    missing = [name for name in names if name not in found]
    if missing:
        session.execute(
            _upsert(session)(Tag).on_conflict_do_nothing(index_elements=["name"]),
            [{"name": name} for name in missing],
        )
        found |= dict(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(missing))).all())
    return found


def _upsert(session: Session):
    """The dialect's INSERT, which has ON CONFLICT."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def tags_of(session: Session, file_ids: Iterable[int]) -> dict[int, list[str]]:
    """Each file's tags, sorted: one query for a page of files."""
    file_ids = list(file_ids)
    tags: dict[int, list[str]] = {file_id: [] for file_id in file_ids}
    if file_ids:
        rows = session.execute(
            select(FileTag.file_id, Tag.name)
            .join(Tag, Tag.id == FileTag.tag_id)
            .where(FileTag.file_id.in_(file_ids))
            .order_by(FileTag.file_id, Tag.name)
        )
        for file_id, name in rows:
            tags[file_id].append(name)
    return tags


def link(session: Session, pairs: Iterable[tuple[int, int]]) -> None:
    """Add (file id, tag id) links that are not there yet (with the file's owner and upload
    time, which a tag's listing is ordered by)."""
    pairs = list(pairs)
    if not pairs:
        return
    files = {
        file_id: (owner_id, uploaded_at)
        for file_id, owner_id, uploaded_at in session.execute(
            select(File.id, File.owner_id, File.uploaded_at).where(
                File.id.in_({f for f, _ in pairs})
            )
        )
    }
    new = [
        {"file_id": f, "tag_id": t, "owner_id": files[f][0], "uploaded_at": files[f][1]}
        for f, t in sorted(set(pairs))
    ]
    # A link another transaction added meanwhile is simply there already.
    session.execute(_upsert(session)(FileTag).on_conflict_do_nothing(), new)


def unlink(session: Session, file_ids: Iterable[int], names: Iterable[str] | None = None) -> None:
    """Remove tags ``names`` (all, when None) from the files."""
    query = delete(FileTag).where(FileTag.file_id.in_(list(file_ids)))
    if names is not None:
        query = query.where(FileTag.tag_id.in_(select(Tag.id).where(Tag.name.in_(list(names)))))
    session.execute(query)

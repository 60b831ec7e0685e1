"""Tables: users (with their API keys and login sessions), files and the outbox of work still to
be published to the workers."""

from __future__ import annotations

import enum
import unicodedata
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    literal,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class db_now(FunctionElement):
    """The database server's clock, ``seconds`` ahead (or behind, when negative).

    Leases and outbox ages are written and compared with this one clock, so API hosts,
    workers and beat whose clocks disagree still agree on what has lapsed.
    """

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float = 0) -> None:
        super().__init__(literal(float(seconds)))


@compiles(db_now, "postgresql")
def _db_now_postgresql(element, compiler, **kw) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(statement_timestamp() + make_interval(secs => {seconds}))"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element, compiler, **kw) -> str:
    # The text SQLAlchemy stores SQLite datetimes as (microseconds, six digits), so that
    # stored values and this clock compare as strings.
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.3f seconds', {seconds}))"


class Base(DeclarativeBase):
    pass


class FileStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    STORED = "stored"
    REJECTED = "rejected"
    FAILED = "failed"
    DELETED = "deleted"


#: States in which an ingest task still has work to do.
OPEN_STATES = (FileStatus.PENDING, FileStatus.PROCESSING)


class Failure(enum.StrEnum):
    """Why a file ended ``failed``, as data: what the reconciler and operators act on (the
    message in ``error`` is for people and may be reworded)."""

    #: The store stayed unavailable through every retry: requeued once it answers again.
    OUTAGE = "outage"
    #: The store refused the object for a reason retrying will not change.
    REFUSED = "refused"
    #: The staged copy no longer matches the upload's digest.
    DAMAGED = "damaged"
    #: The staged copy is gone and the store has no verified copy.
    LOST = "lost"
    #: Handed out OUTBOX_MAX_PUBLISHES times without an answer.
    EXHAUSTED = "exhausted"

    def describe(self, detail: object = "") -> str:
        """The message shown to people for this failure (``detail``: the store's reason or
        the number of attempts)."""
        return _FAILURE_MESSAGES[self].format(detail)


_FAILURE_MESSAGES = {
    Failure.OUTAGE: "Хранилище недоступно: {}",
    Failure.REFUSED: "Хранилище отказало: {}",
    Failure.DAMAGED: "Промежуточная копия файла повреждена",
    Failure.LOST: "Промежуточная копия файла утеряна",
    Failure.EXHAUSTED: "Файл не обработан после {} попыток",
}


class OutboxKind(enum.StrEnum):
    INGEST = "ingest"
    METADATA = "metadata"
    DELETE = "delete"


def identity_key(text: str) -> str:
    """What makes two usernames (or two email addresses) the same: Unicode NFKC with case
    folding, so ``Admin``, ``ADMIN`` and ``ａｄｍｉｎ`` are one user (Unicode's NFKC_Casefold)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


class _KeyedIdentity:
    """A username and an email address kept with their identity keys (``identity_key``),
    which the unique constraints compare."""

    username_key: Mapped[str]
    email_key: Mapped[str]

    @validates("username")
    def _key_username(self, _key: str, value: str) -> str:
        self.username_key = identity_key(value)
        self._named(value)
        return value

    @validates("email")
    def _key_email(self, _key: str, value: str) -> str:
        self.email_key = identity_key(value)
        return value

    def _named(self, username: str) -> None:
        """What else a class keeps about a name (an account: what it looks like)."""


class User(_KeyedIdentity, Base):
    """A user; the spelling given is kept for display, uniqueness is decided on the keys."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    #: Text: NFKC with case folding can make a name 18 times longer (U+FDFA).
    username_key: Mapped[str] = mapped_column(Text, unique=True)
    email_key: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: argon2id (PHC string); None for users created without one (v1 ``POST /users``): they
    #: cannot log in until an operator sets a password.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: When the account was deleted: its row stays as a tombstone (its files, deleted too,
    #: still name it), its name and address are erased and free for others.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Bytes of the account's pending, processing and stored files: what its quota holds,
    #: kept with every upload and status change (``common.files.usage``).
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: The account's own quota in MiB (0: none); None: USER_QUOTA_MB.
    quota_mb: Mapped[int | None] = mapped_column(Integer)

    #: What the name looks like (``common.accounts.usernames.skeleton``): a look-alike is refused.
    username_skeleton: Mapped[str | None] = mapped_column(Text, index=True)

    def _named(self, username: str) -> None:
        from common.accounts.usernames import skeleton

        self.username_skeleton = skeleton(username)


class OpenUser(_KeyedIdentity, Base):
    """A user of open v1 (``V1_ACCESS=open``): a name and an address anyone may list and add,
    unique among themselves, never an account (docs/API.md, "Users")."""

    __tablename__ = "open_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254))
    username_key: Mapped[str] = mapped_column(Text, unique=True)
    email_key: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A key a program sends as ``Authorization: Bearer upk_...``; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    #: The first characters of the key, shown in listings so a person can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Space-separated scopes (``files:read files:write``).
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuthSession(Base):
    """One login: the family of access and refresh tokens issued from one password check.

    Tokens carry the session's id; revoking the session revokes all of them, and
    ``refresh_jti`` names the one refresh token that may still be exchanged (rotation).
    """

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    refresh_jti: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The client address (or IPv6 /64) the login came from: an address that logged in to
    #: an account before is not held to the account's limit on guesses.
    client: Mapped[str | None] = mapped_column(String(64))


def search_key(text: str) -> str:
    """How names are compared in a search: Unicode NFKC with case folding, in every script
    (``ОТЧЁТ`` and ``отчёт`` are one word), as usernames are."""
    return identity_key(text)


class Tag(Base):
    """A label, normalised (``common.files.labels``); shared by every owner, counted per owner."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class FileTag(Base):
    """A file's tag. The file's owner and upload time (neither ever changes) are kept here too,
    so that one owner's files with a tag, newest first, are one range of an index."""

    __tablename__ = "file_tags"
    __table_args__ = (
        Index("ix_file_tags_listing", "tag_id", "owner_id", "uploaded_at", "file_id"),
    )

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        # A caller's listing in each order, by keyset (the id breaks ties).
        Index("ix_files_owner_uploaded", "owner_id", "uploaded_at", "id"),
        Index("ix_files_owner_name", "owner_id", "name"),
        Index("ix_files_owner_original_name", "owner_id", "original_name", "id"),
        Index("ix_files_owner_size", "owner_id", "size", "id"),
        Index("ix_files_owner_category", "owner_id", "category"),
        # PostgreSQL: a trigram index serves `search_name LIKE '%...%'` (migration 0005).
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Who uploaded it; None for files uploaded through open v1 (and before accounts).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    original_name: Mapped[str] = mapped_column(String(255))
    #: ``original_name`` as searches compare it (``search_key``), kept with it.
    search_name: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    extension: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(128))
    status: Mapped[FileStatus] = mapped_column(
        Enum(
            FileStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
        ),
        default=FileStatus.PENDING,
        index=True,
    )
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str | None] = mapped_column(String(32))
    etag: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    #: Why a ``failed`` file failed (``error`` says it in words).
    failure: Mapped[Failure | None] = mapped_column(
        Enum(Failure, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    #: Who is working on the file (``processing``) and until when, by the database's clock:
    #: the worker renews the lease while it works; the reconciler takes back a lapsed one.
    claim: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @validates("original_name")
    def _key_original_name(self, _key: str, value: str) -> str:
        self.search_name = search_key(value)
        return value


class FileEvent(Base):
    """One change of a file, for its owner's live status (docs/API.md, "Live status"):
    written in the same transaction as the change (``common.files.states``), read by id in
    commit order by the realtime process, kept EVENTS_RETENTION."""

    __tablename__ = "file_events"
    __table_args__ = (
        # An owner's events after an id (a client's replay), and the pruning of old ones.
        Index("ix_file_events_owner_id", "owner_id", "id"),
        Index("ix_file_events_at", "at"),
        # SQLite: never an id twice, also once every row was pruned (migration 0012).
        {"sqlite_autoincrement": True},
    )

    #: Increasing; BIGINT on PostgreSQL (SQLite's INTEGER PRIMARY KEY is 64-bit already).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), index=True)
    #: The file's owner then (None: an ownerless file of open v1).
    owner_id: Mapped[int | None] = mapped_column(Integer)
    #: ``file.<status>`` for a status, ``file.metadata``, ``file.renamed``, ``file.labels``.
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsageTotal(Base):
    """An account's live files and bytes in one status, kept as the work happens
    (``common.files.usage``), never by scanning files."""

    __tablename__ = "usage_totals"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageDay(Base):
    """What an account did on one day (UTC), counted as it happened."""

    __tablename__ = "usage_daily"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    uploads: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    deletes: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)


class OutboxEntry(Base):
    """Work that must reach a worker. Written with the change that needs it, removed when done."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), index=True)
    kind: Mapped[OutboxKind] = mapped_column(
        Enum(
            OutboxKind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
        )
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=db_now(), index=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    publish_count: Mapped[int] = mapped_column(Integer, default=0)


class UploadState(enum.StrEnum):
    OPEN = "open"  # parts may be sent
    COMPLETED = "completed"  # its file exists (``file_id``)
    ABORTED = "aborted"  # by its owner, or by beat past UPLOAD_TTL: parts gone, bytes freed


class DirectUpload(Base):
    """A direct upload (docs/API.md, "Direct uploads"): a file declared first and sent in parts
    of ``part_size`` straight to the store (or, on the filesystem store, to signed URLs the API
    serves). Its declared bytes are reserved against the owner's quota from creation on."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_state_expires", "state", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    original_name: Mapped[str] = mapped_column(String(255))
    extension: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    #: Declared by the client (hex); the file's bytes are checked against it.
    sha256: Mapped[str | None] = mapped_column(String(64))
    part_size: Mapped[int] = mapped_column(BigInteger)
    part_count: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    category: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[UploadState] = mapped_column(
        Enum(
            UploadState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=UploadState.OPEN,
    )
    #: The file it became (complete).
    file_id: Mapped[int | None] = mapped_column(
        ForeignKey("files.id", ondelete="SET NULL"), index=True
    )
    #: The store's own id of the multipart upload (S3's UploadId), where it has one.
    store_upload_id: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UploadPart(Base):
    """The service's ledger of one part of a direct upload: what resume and complete trust."""

    __tablename__ = "upload_parts"

    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    part_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    #: The part's sha256 (hex): declared by the client, or computed when received.
    sha256: Mapped[str | None] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

"""Request and reply models of v2 (docs/API.md, "Version 2"); the document is spec_v2's."""

from __future__ import annotations

import datetime as dt
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from api.auth import KEY_SCOPES
from api.schemas import NAME_MAX, NAME_PATTERN, Email, FileObject, Status, UploadForm, Username
from common.accounts.passwords import MAX_LENGTH, MIN_LENGTH
from common.files.labels import MAX_TAGS
from common.models import FileStatus


def _printable(value: str) -> str:
    """No control characters (PostgreSQL refuses NUL in text; none belongs in a name)."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def printable(**constraints):
    """Text with no control characters and string ``constraints`` (lengths, stripping), which
    are checked first: set after the check, pydantic checks them as a generic sequence's and
    says so ("Value should have at least 1 item after validation") of an empty name."""
    return Annotated[str, StringConstraints(**constraints), AfterValidator(_printable)]


#: A name a person gives: a file's original name, a direct upload's file name, a search.
ShownName = printable(min_length=1, max_length=255)
#: What a log-in names: a username or an email address.
LoginName = printable(min_length=1, max_length=254)
Password = Annotated[
    str, StringConstraints(strict=True, min_length=MIN_LENGTH, max_length=MAX_LENGTH)
]
Scope = Literal[KEY_SCOPES]
#: Every status, ``deleted`` too: a v2 listing may ask for deleted files by name.
AnyStatus = Literal[tuple(s.value for s in FileStatus)]
#: The largest size a ``BigInteger`` column holds.
MAX_SIZE = 2**63 - 1
SORTS = ("uploaded_at", "name", "original_name", "size")
Sort = Literal[tuple(s for key in SORTS for s in (key, f"-{key}"))]


class Registration(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    username: Username
    email: Email
    password: Password = Field(description="8 to 256 characters, any")


class PasswordConfirmation(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    password: str = Field(max_length=MAX_LENGTH, description="the account's password, again")


class UserV2(BaseModel):
    id: int
    username: str
    email: str
    is_admin: bool
    created_at: str


class Usage(BaseModel):
    files: int
    bytes_stored: int
    by_status: dict[Status, int]


class Quota(BaseModel):
    used_bytes: int = Field(
        description="pending, processing and stored files, and open direct uploads"
    )
    quota_bytes: int | None = Field(description="null: no limit")


class Me(UserV2):
    usage: Usage
    quota: Quota


class Login(BaseModel):
    """``username`` may also be the email address; ``email`` is accepted in its place."""

    model_config = ConfigDict(strict=True, extra="forbid")

    username: LoginName | None = None
    email: LoginName | None = None
    password: str = Field(max_length=MAX_LENGTH)

    @model_validator(mode="after")
    def _one_login(self) -> Login:
        if (self.username is None) == (self.email is None):
            raise ValueError("give username (or email), not both")
        return self

    @property
    def login(self) -> str:
        return self.username if self.username is not None else self.email  # type: ignore[return-value]


class RefreshBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    refresh_token: str | None = Field(None, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str | None = Field(description="null when it was set in the page's cookie")
    token_type: Literal["Bearer"]
    expires_in: int


class KeyIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: printable(strip_whitespace=True, min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=lambda: list(KEY_SCOPES), min_length=1)


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: str
    last_used_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, never again")


class KeyList(BaseModel):
    items: list[KeyOut]


class FileV2(FileObject):
    status: AnyStatus
    owner: str | None
    tags: list[str]
    category: str | None
    uploaded_at: str


class FilePage(BaseModel):
    items: list[FileV2]
    next_cursor: str | None
    has_more: bool


ContentType = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9!#$&^_.+-]+/(\*|[A-Za-z0-9!#$&^_.+-]+)$", max_length=128
    ),
]
Label = printable(min_length=1, max_length=200)


def _utc(value: datetime) -> datetime:
    """The moment in UTC; one that falls outside years 1-9999 once its offset is applied
    (``0001-01-01T00:00+01:00``) is refused, as no database column could hold it."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


#: An ISO 8601 date or date and time; without a zone it is UTC.
Moment = Annotated[datetime, AfterValidator(_utc)]


class FileListQuery(BaseModel):
    """Every filter narrows the listing (all must hold); see docs/API.md for examples."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000, description="at most this many files a page")
    cursor: str | None = Field(None, max_length=2048, description="next_cursor of a page")
    sort: Sort = Field("-uploaded_at", description="a key, '-' in front for descending")
    q: ShownName | None = Field(
        None, description="in the original name, any case, any script; % and _ are literal"
    )
    prefix: str | None = Field(None, max_length=64, description="stored name starts with this")
    tag: list[Label] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description=f"repeatable (at most {MAX_TAGS}, a file's most): has every one",
    )
    category: Label | None = Field(None, description="in this category")
    status: list[AnyStatus] = Field(
        default_factory=list,
        max_length=len(FileStatus),
        description="repeatable: any of these (default: all but deleted)",
    )
    content_type: ContentType | None = Field(
        None, description="exact (image/png) or a family (image/*)"
    )
    min_size: int | None = Field(None, ge=0, le=MAX_SIZE, description="bytes, at least")
    max_size: int | None = Field(None, ge=0, le=MAX_SIZE, description="bytes, at most")
    uploaded_after: Moment | None = Field(None, description="ISO 8601; no zone: UTC")
    uploaded_before: Moment | None = Field(None, description="ISO 8601; no zone: UTC")
    owner: str | None = Field(
        None,
        max_length=NAME_MAX,
        pattern=r"^([\w.-]+|\*)$",
        description="admins: another user's files ('*': everyone's)",
    )


class UploadFormV2(UploadForm):
    tags: str | None = Field(None, description="comma-separated, or the part repeated")
    category: str | None = Field(None, description="one category")


class FilePatch(BaseModel):
    """JSON Merge Patch of a file's labels and display name: absent keys change nothing,
    ``category: null`` removes the category; ``tags`` replaces, then ``add_tags`` and
    ``remove_tags`` apply."""

    model_config = ConfigDict(strict=True, extra="forbid")

    original_name: ShownName | None = None
    category: Label | None = None
    tags: list[Label] | None = Field(None, max_length=MAX_TAGS)
    add_tags: list[Label] | None = Field(None, max_length=MAX_TAGS)
    remove_tags: list[Label] | None = Field(None, max_length=1000)


class LabelCount(BaseModel):
    name: str
    count: int


class LabelCounts(BaseModel):
    items: list[LabelCount]


class BulkIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    action: Literal["delete", "tag", "untag", "set_category"]
    names: list[Annotated[str, StringConstraints(max_length=255)]] = Field(
        min_length=1, max_length=1000
    )
    tags: list[Label] | None = Field(None, min_length=1, max_length=MAX_TAGS)
    category: Label | None = None


class BulkResult(BaseModel):
    name: str
    ok: bool
    code: str | None = None


class BulkReply(BaseModel):
    results: list[BulkResult]
    succeeded: int
    failed: int


class DownloadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redirect: bool = Field(False, description="1: answer 302 to the presigned URL")


#: The longest span one usage request covers.
MAX_USAGE_DAYS = 366


class UsageQuery(BaseModel):
    """Days are UTC dates, both ends included; at most 366 of them (default: the last 30)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: dt.date | None = Field(None, alias="from", description="first day, YYYY-MM-DD")
    to: dt.date | None = Field(None, description="last day, YYYY-MM-DD (default: today)")
    user: str | None = Field(
        None,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="admins: another account's usage",
    )


class UsageDayOut(BaseModel):
    date: dt.date
    uploads: int
    upload_bytes: int
    downloads: int
    deletes: int
    rejected: int
    failed: int


class UsageReply(BaseModel):
    totals: Usage
    daily: list[UsageDayOut]


class AdminUsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000, description="at most this many accounts a page")
    cursor: str | None = Field(None, max_length=2048, description="next_cursor of a page")


class AccountUsage(BaseModel):
    user_id: int
    username: str
    totals: Usage


class AdminUsagePage(BaseModel):
    items: list[AccountUsage]
    next_cursor: str | None
    has_more: bool


class Discovery(BaseModel):
    version: Literal["2"]
    events_url: str = Field(description="Server-Sent Events of the caller's files")
    ws_url: str = Field(description="the same events over WebSocket")
    upload_part_size: int = Field(description="bytes of each part of a direct upload")
    max_upload_size: int = Field(description="bytes of the largest upload in one request")
    registration: Literal["open", "closed"] = Field(description="whether anyone may register")


class EventsTicket(BaseModel):
    ticket: str = Field(description="for ?ticket= of events_url or ws_url: once, within 60 s")
    expires_in: int


Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class UploadCreate(BaseModel):
    """A direct upload declared: the file's name and size; optionally its sha256 (checked
    against the bytes), each part's sha256 (the store refuses a part that differs), labels."""

    model_config = ConfigDict(strict=True, extra="forbid")

    filename: ShownName
    size: int = Field(ge=1, description="bytes")
    content_type: str | None = Field(None, max_length=255, description="ignored: sniffed")
    sha256: Sha256Hex | None = None
    part_sha256: list[Sha256Hex] | None = Field(None, max_length=10_000)
    tags: list[Label] | None = Field(None, max_length=MAX_TAGS)
    category: Label | None = None


class PartUrl(BaseModel):
    part_number: int
    size: int
    url: str
    headers: dict[str, str] = Field(
        description="send these with the PUT: the signature covers them (a browser sets "
        "Content-Length itself)"
    )


class UploadCreated(BaseModel):
    upload_id: str
    part_size: int
    parts: list[PartUrl]
    expires_at: str


class PartState(BaseModel):
    part_number: int
    size: int
    received: bool
    etag: str | None
    sha256: str | None


class UploadStateReply(BaseModel):
    upload_id: str
    state: Literal["open", "completed", "aborted"]
    filename: str
    size: int
    part_size: int
    parts: list[PartState]
    expires_at: str
    file: FileV2 | None


class PartNumbers(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    part_numbers: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        min_length=1, max_length=10_000
    )


class PartUrls(BaseModel):
    parts: list[PartUrl]


class PartReceived(BaseModel):
    part_number: int
    etag: str


class UploadCompleted(BaseModel):
    upload_id: str
    state: Literal["completed"]
    file: FileV2

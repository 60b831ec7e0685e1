"""Request and reply models of v2 (docs/API.md, "Version 2"); the document is spec_v2's."""

from __future__ import annotations

import unicodedata
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
from api.auth.passwords import MAX_LENGTH, MIN_LENGTH
from api.schemas import Email, FileObject, Status, Username


def _printable(value: str) -> str:
    """No control characters (PostgreSQL refuses NUL in text; none belongs in a name)."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


Printable = Annotated[str, AfterValidator(_printable)]
Password = Annotated[
    str, StringConstraints(strict=True, min_length=MIN_LENGTH, max_length=MAX_LENGTH)
]
Scope = Literal[KEY_SCOPES]
SORTS = ("uploaded_at", "name", "original_name", "size")
Sort = Literal[tuple(s for key in SORTS for s in (key, f"-{key}"))]


class Registration(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    username: Username
    email: Email
    password: Password = Field(description="8 to 256 characters, any")


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


class Me(UserV2):
    usage: Usage


class Login(BaseModel):
    """``username`` may also be the email address; ``email`` is accepted in its place."""

    model_config = ConfigDict(strict=True, extra="forbid")

    username: Printable | None = Field(None, min_length=1, max_length=254)
    email: Printable | None = Field(None, min_length=1, max_length=254)
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
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class KeyIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: Annotated[
        Printable, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
    ]
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
    owner: str | None
    tags: list[str]
    category: str | None
    uploaded_at: str


class FilePage(BaseModel):
    items: list[FileV2]
    next_cursor: str | None
    has_more: bool


class FileListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000, description="at most this many files a page")
    cursor: str | None = Field(None, max_length=2048, description="next_cursor of a page")
    sort: Sort = Field("-uploaded_at", description="a key, '-' in front for descending")
    owner: str | None = Field(
        None,
        pattern=r"^([\w.-]{1,64}|\*)$",
        description="admins: another user's files ('*': everyone's)",
    )


class DownloadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redirect: bool = Field(False, description="1: answer 302 to the presigned URL")

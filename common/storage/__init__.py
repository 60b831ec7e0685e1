"""Object storage behind one small interface, chosen by STORAGE_BACKEND.

Implementations turn vendor errors into ``FileNotFoundError`` (no such object),
``StorageUnavailable`` (the store cannot be reached, or answered with an error that may pass:
a server error, throttling, a timeout), ``StorageRefused`` (it answered with an error that
retrying will not change: access denied, no such bucket, metadata too large) and
``StorageIntegrityError`` (the store kept other bytes than were sent), so callers never catch
botocore or OS specifics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from common.settings import Settings


class StorageError(Exception):
    """The store did not do what was asked."""


class StorageUnavailable(StorageError):
    """The store cannot do the operation now; retrying later may succeed."""


class StorageRefused(StorageError):
    """The store refused the operation for a reason that retrying will not change."""


class StorageIntegrityError(Exception):
    """The store's checksum of an object differs from the bytes that were sent."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PutRequest:
    """Everything a store needs to keep one object the way clients must get it back."""

    key: str
    path: Path
    content_type: str
    original_name: str
    md5_hex: str
    metadata: dict[str, str]

    @property
    def content_disposition(self) -> str:
        return content_disposition(self.original_name)


class Storage(Protocol):
    #: Optional abilities, declared by each store rather than discovered by its class:
    #: whether its presigned URLs are served by the API itself (``/storage/...``, with
    #: ``verify``, ``sidecar`` and ``object_path``), the name of its bucket, if it has one, and
    #: whether clients send a direct upload's parts to the store itself (``start_multipart``,
    #: ``sign_part``, ``list_parts``, ``finish_multipart``, ``abort_multipart``, ``copy``: S3)
    #: rather than to URLs the API serves.
    serves_signed_urls: bool
    multipart: bool
    bucket: str | None

    def ensure_bucket(self) -> None:
        """Create where objects go (the bucket, the directory) if it does not exist."""

    def put(self, request: PutRequest) -> ObjectInfo:
        """Store the file, verify the store's checksum, and describe the stored object."""

    def head(self, key: str) -> ObjectInfo:
        """Describe a stored object; ``FileNotFoundError`` when there is none."""

    def download(self, key: str, destination: Path) -> None:
        """Copy a stored object's bytes into ``destination``."""

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def presign_get(self, key: str, ttl: int, filename: str | None = None) -> str:
        """A URL that serves the object by plain GET for ``ttl`` seconds (may be host-relative),
        named ``filename`` in its Content-Disposition when given (the file's current name)."""

    def health(self) -> None:
        """Return if the store answers; ``StorageRefused`` when it answers that the bucket is
        missing or closed to these credentials, ``StorageUnavailable`` when it does not answer."""

    def prepare(self) -> None:
        """Load now what the first transfer would load (workers call it before forking)."""

    def sweep(self, older_than: float) -> int:
        """Remove what writes interrupted at least ``older_than`` seconds ago left behind;
        return how many things were removed (the reconciler calls it)."""


def content_disposition(original_name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name in RFC 5987 form (RFC 6266)."""
    fallback = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in original_name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(original_name, safe='')}"


#: S3 keeps at most 2 KB of user metadata (the UTF-8 bytes of every key and value).
METADATA_LIMIT = 2048
_SAFE = " !#$&'()*+,/:;=?@[]~"


def ascii_metadata(values: dict[str, str], limit: int = METADATA_LIMIT) -> dict[str, str]:
    """S3 user metadata must be ASCII: percent-encode (RFC 3986) every value that is not. If
    the whole is over S3's limit, ``original_name`` is shortened (by whole characters) to fit:
    the full name is in Content-Disposition and in the database."""
    encoded = {k: quote(v, safe=_SAFE) for k, v in values.items()}
    over = sum(len(k) + len(v) for k, v in encoded.items()) - limit
    name = values.get("original_name", "")
    while over > 0 and name:
        name = name[:-1]
        shorter = quote(name, safe=_SAFE)
        over -= len(encoded["original_name"]) - len(shorter)
        encoded["original_name"] = shorter
    return encoded


def from_settings(settings: Settings) -> Storage:
    """The store STORAGE_BACKEND names, configured from ``settings``."""
    if settings.storage_backend == "s3":
        from common.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    from common.storage.filesystem import FilesystemStorage

    return FilesystemStorage(settings.storage_dir, settings.resolved_secret_key())


def refusal_at_start(storage: Storage) -> str | None:
    """Probe the store as a process starts: the reason it can never work (a bucket that does
    not exist, credentials it refuses), or None. A store that does not answer yet is no reason
    not to start: uploads are accepted and pushed once it answers."""
    try:
        storage.health()
    except StorageRefused as exc:
        return str(exc)
    except StorageUnavailable:
        return None
    return None

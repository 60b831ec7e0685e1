"""Object storage behind one small interface, chosen by STORAGE_BACKEND.

Implementations turn vendor errors into ``FileNotFoundError`` (no such object),
``StorageUnavailable`` (the store cannot be reached or answered with a server error) and
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


class StorageUnavailable(Exception):
    """The store cannot do the operation now; retrying later may succeed."""


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
    def put(self, request: PutRequest) -> ObjectInfo:
        """Store the file, verify the store's checksum, and describe the stored object."""

    def head(self, key: str) -> ObjectInfo:
        """Describe a stored object; ``FileNotFoundError`` when there is none."""

    def download(self, key: str, destination: Path) -> None:
        """Copy a stored object's bytes into ``destination``."""

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def presign_get(self, key: str, ttl: int) -> str:
        """A URL that serves the object by plain GET for ``ttl`` seconds (may be host-relative)."""

    def health(self) -> None:
        """Return if the store answers; raise ``StorageUnavailable`` otherwise."""

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


def ascii_metadata(values: dict[str, str]) -> dict[str, str]:
    """S3 user metadata must be ASCII: percent-encode (RFC 3986) every value that is not."""
    return {k: quote(v, safe=" !#$&'()*+,/:;=?@[]~") for k, v in values.items()}


def from_settings(settings: Settings) -> Storage:
    """The store STORAGE_BACKEND names, configured from ``settings``."""
    if settings.storage_backend == "s3":
        from common.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    from common.storage.filesystem import FilesystemStorage

    return FilesystemStorage(settings.storage_dir, settings.resolved_secret_key())

"""The file objects of docs/API.md, built from a file's row: the API's replies and the realtime
process's events show a file the same way. The download URL is the caller's to give (each
process signs it in its own way)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from common.fileinfo import file_metadata, iso_z
from common.models import File, FileStatus


def file_object(file: File | Row, download_url: str | None) -> dict[str, Any]:
    """The v1 file object (``info``, list entries, ``file_info``)."""
    body: dict[str, Any] = {
        "name": file.name,
        "original_name": file.original_name,
        "size": file.size,
        "content_type": file.content_type,
        "status": file.status.value,
        "last_modified": iso_z(file.stored_at or file.uploaded_at),
        "etag": file.etag,
        "sha256": file.sha256,
        "metadata": file_metadata(file) | (file.extra or {}),
        "download_url": download_url,
    }
    if file.status in (FileStatus.REJECTED, FileStatus.FAILED):
        body["error"] = file.error
    return body


def file_object_v2(file: Row, download_url: str | None, tags: list[str]) -> dict[str, Any]:
    """The v2 file object: the v1 fields, ``owner``, ``tags``, ``category``, ``uploaded_at``
    (``file`` has the owner's username as ``owner``: ``queries.LISTED_WITH_OWNER``)."""
    body = file_object(file, download_url)
    body["owner"] = file.owner
    body["tags"] = tags
    body["category"] = file.category
    body["uploaded_at"] = (
        body["last_modified"] if file.stored_at is None else iso_z(file.uploaded_at)
    )
    return body

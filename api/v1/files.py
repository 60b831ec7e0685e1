"""File routes: upload, list, info, download, delete (docs/API.md)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from flask import Blueprint, current_app, jsonify, request, url_for
from sqlalchemy import Row, select

from api.errors import ApiError
from api.multipart import stage_upload
from api.observability import UPLOAD_BYTES, UPLOADS_ACCEPTED
from api.schemas import (
    DeleteReply,
    DownloadReply,
    FileList,
    FileObject,
    FileQuery,
    UploadForm,
    UploadReply,
    replies,
    spec,
)
from common.fileinfo import file_metadata, iso_z
from common.models import OPEN_STATES, File, FileStatus
from common.naming import is_generated_name
from common.pipeline import Pipeline

bp = Blueprint("files", __name__)

MAX_WAIT = 30
POLL_INTERVAL = 0.05
_NAME_PREFIX = re.compile(r"[0-9a-z_.]{0,64}")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def _pipeline() -> Pipeline:
    return current_app.extensions["pipeline"]


#: What a file object shows: a listing reads these columns as plain rows, without building
#: (and tracking) an ORM object per file, most of the cost of a page of 100.
_LISTED = (
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
)


UrlOf = Callable[[File | Row], str | None]


def file_object(file: File | Row, url_of: UrlOf | None = None) -> dict[str, Any]:
    """The file object of docs/API.md (``info``, list entries, ``file_info``); ``url_of`` from
    ``download_urls()`` when building many."""
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
        "download_url": (url_of or download_urls())(file),
    }
    if file.status in (FileStatus.REJECTED, FileStatus.FAILED):
        body["error"] = file.error
    return body


class UrlCache:
    """Recently signed download URLs, reused for listings and file objects.

    Signing is most of the cost of a listing (100 URLs a page), so a URL is reused for up to a
    tenth of PRESIGNED_URL_TTL (at most 30 s): a URL in a listing is valid for at least 90% of
    the TTL. ``/download`` always signs afresh, so its ``expires_in`` is exact.
    """

    def __init__(self, ttl: int, size: int = 20_000) -> None:
        self.max_age = min(30.0, ttl / 10)
        self.size = size
        self._items: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, sign: Callable[[str], str]) -> str:
        now = time.monotonic()
        hit = self._items.get(key)
        if hit is not None and now - hit[0] < self.max_age:
            return hit[1]
        url = sign(key)
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (now, url)
        return url


def download_urls(*, fresh: bool = False) -> UrlOf:
    """A function giving a file's download URL (None until it is stored), with what it needs
    looked up once per request: a listing asks for a hundred."""
    ttl = current_app.extensions["settings"].presigned_url_ttl
    storage = _pipeline().storage
    cache: UrlCache = current_app.extensions["download_urls"]
    host_url = request.host_url

    def sign(name: str) -> str:
        return storage.presign_get(name, ttl)

    def url_of(file: File | Row) -> str | None:
        if file.status != FileStatus.STORED:
            return None
        url = sign(file.name) if fresh else cache.get(file.name, sign)
        # The filesystem store signs host-relative paths, served by this API.
        return urljoin(host_url, url) if url.startswith("/") else url

    return url_of


def _load(name: str) -> File:
    """A live file by its generated name; anything else is 404, never a path."""
    if is_generated_name(name):
        with _pipeline().db.reading() as session:
            file = session.scalars(select(File).where(File.name == name)).one_or_none()
        if file is not None and file.status != FileStatus.DELETED:
            return file
    raise ApiError(404, "FILE_NOT_FOUND", "Файл не найден")


@bp.post("/files/upload")
@spec.validate(
    form=UploadForm,
    resp=replies({"HTTP_201": UploadReply}, 400, 413, 415, 422),
    tags=["files"],
    skip_validation=True,  # the body is streamed by stage_upload, never parsed as a form
)
def upload():
    """Upload one file (multipart part 'file'); 'Prefer: wait=N' waits for the result."""
    settings = current_app.extensions["settings"]
    wait = _prefer_wait(request.headers.get("Prefer", ""))
    staged = stage_upload(
        request.stream,
        request.headers.get("Content-Type"),
        request.content_length,
        staging_dir=settings.staging_dir,
        max_bytes=settings.max_upload_bytes,
        allowed_extensions=settings.allowed_extensions,
        now=datetime.now(UTC),
    )
    file = _pipeline().accept(staged)
    UPLOADS_ACCEPTED.inc()
    UPLOAD_BYTES.inc(file.size)
    headers = {"Location": url_for("files.info", name=file.name, _external=True)}
    if wait is not None:
        file = _wait_for_final_state(file, wait)
        if file.status not in OPEN_STATES:
            headers["Preference-Applied"] = f"wait={wait}"
        if file.status == FileStatus.REJECTED:
            raise ApiError(
                422,
                "FILE_REJECTED",
                "Файл отклонен: содержимое не соответствует типу",
                details={"reason": file.error, "filename": file.name},
                headers=headers,
            )
    url_of = download_urls()
    body = {
        "message": "Файл успешно загружен",
        "filename": file.name,
        "original_name": file.original_name,
        "size": file.size,
        "content_type": file.content_type,
        "status": file.status.value,
        "status_url": headers["Location"],
        "download_url": url_of(file),
        "file_info": file_object(file, url_of),
    }
    return jsonify(body), 201, headers


def _prefer_wait(header: str) -> int | None:
    match = _PREFER_WAIT.search(header)
    return min(int(match.group(1)), MAX_WAIT) if match else None


def _wait_for_final_state(file: File, seconds: int) -> File:
    deadline = time.monotonic() + seconds
    db = _pipeline().db
    current = file
    while time.monotonic() < deadline:
        with db.reading() as session:
            current = session.get(File, file.id)
        if current.status not in OPEN_STATES:
            return current
        time.sleep(POLL_INTERVAL)
    return current


@bp.get("/files")
@spec.validate(query=FileQuery, resp=replies({"HTTP_200": FileList}, 400), tags=["files"])
def list_files():
    """Live files whose name starts with 'prefix', in name (upload) order."""
    query_args: FileQuery = request.context.query
    prefix, limit = query_args.prefix, query_args.limit
    files: list[Row] = []
    # Names are [0-9a-z_.] only: any other prefix matches nothing (and never reaches SQL).
    if _NAME_PREFIX.fullmatch(prefix):
        query = select(*_LISTED).where(File.status != FileStatus.DELETED)
        if prefix:
            escaped = prefix.replace("_", "\\_")
            query = query.where(File.name.like(escaped + "%", escape="\\"))
        with _pipeline().db.reading() as session:
            files = session.execute(query.order_by(File.name).limit(limit)).all()
    url_of = download_urls()
    entries = [file_object(f, url_of) for f in files]
    return jsonify({"files": entries, "count": len(entries), "prefix": prefix})


@bp.get("/files/<path:name>/info")
@spec.validate(resp=replies({"HTTP_200": FileObject}, 404), tags=["files"])
def info(name: str):
    """One file's state and metadata."""
    return jsonify(file_object(_load(name)))


@bp.get("/files/<path:name>/download")
@spec.validate(resp=replies({"HTTP_200": DownloadReply}, 404, 409), tags=["files"])
def download(name: str):
    """A presigned URL for a stored file."""
    file = _load(name)
    if file.status != FileStatus.STORED:
        extra = {"reason": file.error} if file.error else {}
        raise ApiError(
            409,
            "FILE_NOT_READY",
            "Файл еще не готов к скачиванию" if file.status in OPEN_STATES else "Файл недоступен",
            status=file.status.value,
            **extra,
        )
    settings = current_app.extensions["settings"]
    url = download_urls(fresh=True)(file)  # signed now: valid for exactly expires_in
    return jsonify(
        {
            "download_url": url,
            "file_info": file_object(file, lambda _file: url),
            "expires_in": settings.presigned_url_ttl,
        }
    )


@bp.delete("/files/<path:name>")
@spec.validate(resp=replies({"HTTP_200": DeleteReply}, 404), tags=["files"])
def delete(name: str):
    """Delete a file and its stored object."""
    if not is_generated_name(name) or not _pipeline().delete(name):
        raise ApiError(404, "FILE_NOT_FOUND", "Файл не найден")
    return jsonify({"message": "Файл успешно удален", "filename": name})

"""What the file routes of every API version share: finding a file the caller may see,
accepting an upload for its owner, waiting for its result (``Prefer: wait``), download URLs and
the file object of docs/API.md."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from flask import current_app, request, url_for
from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError

from api.auth import Caller, unauthorized, visible_files
from api.errors import ApiError
from api.multipart import stage_upload
from api.observability import UPLOAD_BYTES, UPLOADS_ACCEPTED
from common import labels
from common.fileinfo import file_metadata, iso_z
from common.models import OPEN_STATES, File, FileStatus, User
from common.naming import is_generated_name
from common.pipeline import Pipeline
from common.staging import remove_staged

MAX_WAIT = 30
POLL_INTERVAL = 0.05
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def pipeline() -> Pipeline:
    return current_app.extensions["pipeline"]


#: What a file object shows: a listing reads these columns as plain rows, without building
#: (and tracking) an ORM object per file, most of the cost of a page of 100.
LISTED = (
    File.id,
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


def with_owner(query):
    return query.outerjoin(User, User.id == File.owner_id)


UrlOf = Callable[[File | Row], str | None]


def file_object(file: File | Row, url_of: UrlOf | None = None) -> dict[str, Any]:
    """The v1 file object of docs/API.md (``info``, list entries, ``file_info``); ``url_of``
    from ``download_urls()`` when building many."""
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


def file_object_v2(file: Row, url_of: UrlOf | None = None, tags: list[str] | None = None):
    """The v2 file object: the v1 fields, ``owner``, ``tags``, ``category``, ``uploaded_at``.
    ``tags`` as ``tags_by_file`` gives them (a page's in one query); read here when None."""
    if tags is None:
        tags = tags_by_file([file.id])[file.id]
    body = file_object(file, url_of)
    body["owner"] = file.owner
    body["tags"] = tags
    body["category"] = file.category
    body["uploaded_at"] = (
        body["last_modified"] if file.stored_at is None else iso_z(file.uploaded_at)
    )
    return body


def tags_by_file(file_ids: list[int]) -> dict[int, list[str]]:
    with pipeline().db.reading() as session:
        return labels.tags_of(session, file_ids)


def v2_objects(rows: list[Row], url_of: UrlOf | None = None) -> list[dict[str, Any]]:
    """The v2 file objects of a page of rows: their tags read in one query."""
    url_of = url_of or download_urls()
    tags = tags_by_file([row.id for row in rows])
    return [file_object_v2(row, url_of, tags[row.id]) for row in rows]


class UrlCache:
    """Recently signed download URLs, reused for listings and file objects.

    Signing is most of the cost of a listing (100 URLs a page), so a URL is reused for up to a
    tenth of PRESIGNED_URL_TTL (at most 30 s): a URL in a listing is valid for at least 90% of
    the TTL. ``/download`` always signs afresh, so its ``expires_in`` is exact.
    """

    def __init__(self, ttl: int, size: int = 20_000) -> None:
        self.max_age = min(30.0, ttl / 10)
        self.size = size
        self._items: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], sign: Callable[[tuple[str, str]], str]) -> str:
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
    storage = pipeline().storage
    cache: UrlCache = current_app.extensions["download_urls"]
    host_url = request.host_url

    def sign(key: tuple[str, str]) -> str:
        name, original_name = key
        return storage.presign_get(name, ttl, filename=original_name)

    def url_of(file: File | Row) -> str | None:
        if file.status != FileStatus.STORED:
            return None
        # Named with the file's current name: a renamed file downloads under its new one.
        key = (file.name, file.original_name)
        url = sign(key) if fresh else cache.get(key, sign)
        # The filesystem store signs host-relative paths, served by this API.
        return urljoin(host_url, url) if url.startswith("/") else url

    return url_of


def download_reply(file: Row, shape: Callable[[Row, UrlOf], dict[str, Any]]) -> dict[str, Any]:
    """``/download``'s reply: a URL signed now (valid for exactly ``expires_in``), and the
    file object in ``shape`` (of the API version asked)."""
    url = download_urls(fresh=True)(file)
    return {
        "download_url": url,
        "file_info": shape(file, lambda _file: url),
        "expires_in": current_app.extensions["settings"].presigned_url_ttl,
    }


def not_found() -> ApiError:
    return ApiError(404, "FILE_NOT_FOUND", "Файл не найден")


def load(name: str, who: Caller | None) -> Row:
    """A live file by its generated name, if ``who`` may see it; 404 otherwise, the same
    answer for a file that is someone else's as for one that does not exist."""
    if is_generated_name(name):
        query = with_owner(select(*LISTED_WITH_OWNER)).where(File.name == name, visible_files(who))
        with pipeline().db.reading() as session:
            file = session.execute(query).first()
        if file is not None and file.status != FileStatus.DELETED:
            return file
    raise not_found()


def refresh(file: Row) -> Row:
    """``file`` read again (its status may have moved)."""
    query = with_owner(select(*LISTED_WITH_OWNER)).where(File.id == file.id)
    with pipeline().db.reading() as session:
        return session.execute(query).one()


#: The form parts of a v2 upload besides ``file``.
LABEL_FIELDS = ("tags", "category")


def accept_upload(owner: Caller | None, *, labelled: bool = False) -> Row:
    """Stage the request's multipart body and record it for ``owner`` (None: ownerless); with
    ``labelled``, with the form's ``tags`` and ``category`` (a bad one: 400, nothing kept)."""
    settings = current_app.extensions["settings"]
    staged = stage_upload(
        request.stream,
        request.headers.get("Content-Type"),
        request.content_length,
        staging_dir=settings.staging_dir,
        max_bytes=settings.max_upload_bytes,
        allowed_extensions=settings.allowed_extensions,
        now=datetime.now(UTC),
        fields=LABEL_FIELDS if labelled else (),
    )
    try:
        tags = labels.normalise_all(labels.split(staged.form.get("tags", [])))
        categories = [c for c in staged.form.get("category", []) if c.strip()]
        if len(categories) > 1:
            raise labels.InvalidLabel(",".join(categories), "a file has one category")
        category = labels.normalise(categories[0]) if categories else None
    except labels.InvalidLabel as exc:
        remove_staged(staged.path)
        raise invalid_label(exc) from None
    try:
        file = pipeline().accept(
            staged, owner_id=owner.user_id if owner else None, category=category, tags=tags
        )
    except IntegrityError:  # the owner's row is gone (accept removed the staged bytes)
        if owner is None:
            raise
        raise unauthorized("the account no longer exists") from None
    UPLOADS_ACCEPTED.inc()
    UPLOAD_BYTES.inc(file.size)
    return _AcceptedRow(file, owner.username if owner else None, tags)


def invalid_label(exc: labels.InvalidLabel) -> ApiError:
    return ApiError(
        400,
        "INVALID_TAG",
        "Недопустимый тег или категория",
        details={"label": exc.label, "reason": exc.reason},
    )


class _AcceptedRow:
    """A just-accepted file, shaped like a row of LISTED_WITH_OWNER (no second read)."""

    def __init__(self, file: File, owner: str | None, tags: list[str]) -> None:
        self._file, self.owner, self.tags = file, owner, tags

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def prefer_wait(header: str) -> int | None:
    match = _PREFER_WAIT.search(header)
    return min(int(match.group(1)), MAX_WAIT) if match else None


def answer_upload(file: Row, info_endpoint: str) -> tuple[Row, dict[str, str]]:
    """An accepted upload as its reply shows it: waited for when the request says
    ``Prefer: wait=N`` (422 when it was rejected meanwhile), with its reply headers."""
    headers = {"Location": url_for(info_endpoint, name=file.name, _external=True)}
    wait = prefer_wait(request.headers.get("Prefer", ""))
    if wait is not None:
        file = wait_for_final_state(file, wait)
        if file.status not in OPEN_STATES:
            headers["Preference-Applied"] = f"wait={wait}"
        if file.status == FileStatus.REJECTED:
            raise rejected(file, headers)
    return file, headers


def wait_for_final_state(file: Row, seconds: int) -> Row:
    deadline = time.monotonic() + seconds
    current = file
    while time.monotonic() < deadline:
        current = refresh(file)
        if current.status not in OPEN_STATES:
            return current
        time.sleep(POLL_INTERVAL)
    return current


def not_ready(file: Row) -> ApiError:
    extra = {"reason": file.error} if file.error else {}
    return ApiError(
        409,
        "FILE_NOT_READY",
        "Файл еще не готов к скачиванию" if file.status in OPEN_STATES else "Файл недоступен",
        status=file.status.value,
        **extra,
    )


def rejected(file: Row, headers: dict[str, str]) -> ApiError:
    return ApiError(
        422,
        "FILE_REJECTED",
        "Файл отклонен: содержимое не соответствует типу",
        details={"reason": file.error, "filename": file.name},
        headers=headers,
    )

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

from flask import request, url_for
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from api import errors, services
from api.auth import Caller, unauthorized, visible_files
from api.errors import ApiError
from api.multipart import FileTooLarge, stage_upload
from api.observability import UPLOAD_BYTES, UPLOADS_ACCEPTED
from common.files import actions, labels, queries, render, usage
from common.files.pipeline import Pipeline
from common.models import OPEN_STATES, File, FileStatus
from common.naming import is_generated_name
from common.staging import remove_staged

MAX_WAIT = 30
POLL_INTERVAL = 0.05
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def pipeline() -> Pipeline:
    return services.pipeline()


UrlOf = Callable[[File | Row], str | None]


def file_object(file: File | Row, url_of: UrlOf | None = None) -> dict[str, Any]:
    """The v1 file object of docs/API.md (``info``, list entries, ``file_info``); ``url_of``
    from ``download_urls()`` when building many."""
    return render.file_object(file, (url_of or download_urls())(file))


def file_object_v2(file: Row, url_of: UrlOf | None = None, tags: list[str] | None = None):
    """The v2 file object. ``tags`` as ``tags_by_file`` gives them (a page's in one query);
    read here when None."""
    if tags is None:
        tags = tags_by_file([file.id])[file.id]
    return render.file_object_v2(file, (url_of or download_urls())(file), tags)


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
    ttl = services.settings().presigned_url_ttl
    storage = pipeline().storage
    cache: UrlCache = services.services().download_urls
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
    url = issue_download(file)
    return {
        "download_url": url,
        "file_info": shape(file, lambda _file: url),
        "expires_in": services.settings().presigned_url_ttl,
    }


def issue_download(file: Row) -> str:
    """A freshly signed download URL for a stored file, counted in its owner's usage."""
    url = download_urls(fresh=True)(file)
    actions.do_count_download(pipeline().db, file.owner_id)
    return url


def not_found() -> ApiError:
    return errors.FILE_NOT_FOUND()


def load(name: str, who: Caller | None) -> Row:
    """A live file by its generated name, if ``who`` may see it; 404 otherwise, the same
    answer for a file that is someone else's as for one that does not exist."""
    if is_generated_name(name):
        with pipeline().db.reading() as session:
            file = queries.file_named(session, name, visible_files(who))
        if file is not None:
            return file
    raise not_found()


def refresh(file: Row) -> Row:
    """``file`` read again (its status may have moved)."""
    with pipeline().db.reading() as session:
        return queries.file_by_id(session, file.id)


#: The form parts of a v2 upload besides ``file``.
LABEL_FIELDS = ("tags", "category")


def accept_upload(owner: Caller | None, *, labelled: bool = False) -> Row:
    """Stage the request's multipart body and record it for ``owner`` (None: ownerless); with
    ``labelled``, with the form's ``tags`` and ``category`` (a bad one: 400, nothing kept)."""
    settings = services.settings()
    limit, room = settings.max_upload_bytes, None
    if owner is not None:
        with pipeline().db.reading() as session:
            room_of = usage.room_of(session, owner.user_id, settings.user_quota_mb)
        if room_of is None:
            raise unauthorized("the account no longer exists")
        used, quota = room_of
        if quota:  # what is left of it caps this upload, before and while it streams
            room = max(0, quota - used)
            limit = min(limit, room)
    try:
        staged = stage_upload(
            request.stream,
            request.headers.get("Content-Type"),
            request.content_length,
            staging_dir=settings.staging_dir,
            max_bytes=limit,
            allowed_extensions=settings.allowed_extensions,
            now=datetime.now(UTC),
            fields=LABEL_FIELDS if labelled else (),
        )
    except FileTooLarge:
        if room is None or room >= settings.max_upload_bytes:
            raise
        raise quota_exceeded(used, quota, request.content_length) from None
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
    except usage.QuotaExceeded as exc:  # another upload took the room meanwhile
        raise quota_exceeded(exc.used, exc.quota, exc.size) from None
    except IntegrityError:  # the owner's row is gone (accept removed the staged bytes)
        if owner is None:
            raise
        raise unauthorized("the account no longer exists") from None
    UPLOADS_ACCEPTED.inc()
    UPLOAD_BYTES.inc(file.size)
    return _AcceptedRow(file, owner.username if owner else None, tags)


def quota_exceeded(used: int, quota: int, size: int | None) -> ApiError:
    return errors.QUOTA_EXCEEDED(
        {"used": used, "quota": quota, "size": size}, headers={"Connection": "close"}
    )


def invalid_label(exc: labels.InvalidLabel) -> ApiError:
    return errors.INVALID_TAG({"label": exc.label, "reason": exc.reason})


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
    problem = errors.FILE_NOT_READY if file.status in OPEN_STATES else errors.FILE_UNAVAILABLE
    return problem(status=file.status.value, **extra)


def rejected(file: Row, headers: dict[str, str]) -> ApiError:
    return errors.FILE_REJECTED({"reason": file.error, "filename": file.name}, headers=headers)

"""v2 file routes: upload, list (keyset pages), info, download, delete (docs/API.md,
"Files in v2"). Every route acts on the caller's files only (admins: every file); another
user's file is answered exactly as a missing one."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from flask import Blueprint, jsonify, redirect, request, url_for
from sqlalchemy import ColumnElement, literal, select, tuple_

from api import cursors
from api.auth import FILES_READ, FILES_WRITE, Caller, forbidden, guarded, visible_files
from api.auth import caller as current_caller
from api.fileops import (
    LISTED,
    LISTED_WITH_OWNER,
    accept_upload,
    download_reply,
    download_urls,
    file_object_v2,
    load,
    not_found,
    not_ready,
    pipeline,
    prefer_wait,
    rejected,
    wait_for_final_state,
    with_owner,
)
from api.schemas import DownloadReply, UploadForm, replies, spec_v2
from api.v2.schemas import DownloadQuery, FileListQuery, FilePage, FileV2
from common.models import OPEN_STATES, File, FileStatus, User, UTCDateTime, identity_key
from common.naming import is_generated_name

bp = Blueprint("v2_files", __name__, url_prefix="/api/v2")

#: Sort keys and their columns; the file id breaks ties, so every order is total.
SORT_COLUMNS = {
    "uploaded_at": File.uploaded_at,
    "name": File.name,
    "original_name": File.original_name,
    "size": File.size,
}


@bp.post("/files")
@guarded(FILES_WRITE)
@spec_v2.validate(
    form=UploadForm,
    resp=replies({"HTTP_201": FileV2}, 400, 401, 403, 413, 415, 422),
    tags=["files"],
    skip_validation=True,  # the body is streamed by stage_upload, never parsed as a form
)
def upload():
    """Upload one file (multipart part 'file'); 'Prefer: wait=N' waits for the result."""
    wait = prefer_wait(request.headers.get("Prefer", ""))
    file = accept_upload(current_caller())
    headers = {"Location": url_for("v2_files.info", name=file.name, _external=True)}
    if wait is not None:
        file = wait_for_final_state(file, wait)
        if file.status not in OPEN_STATES:
            headers["Preference-Applied"] = f"wait={wait}"
        if file.status == FileStatus.REJECTED:
            raise rejected(file, headers)
    return jsonify(file_object_v2(file)), 201, headers


@bp.get("/files")
@guarded(FILES_READ)
@spec_v2.validate(
    query=FileListQuery, resp=replies({"HTTP_200": FilePage}, 400, 401, 403), tags=["files"]
)
def list_files():
    """The caller's live files, a page at a time (keyset cursors), newest first by default."""
    args: FileListQuery = request.context.query
    who = current_caller()
    owner_clause, owner_key, owner_name = _owner(who, args.owner)
    descending = args.sort.startswith("-")
    column = SORT_COLUMNS[args.sort.lstrip("-")]
    binding = {"owner": owner_key, "sort": args.sort}
    if owner_key == "*":
        query = with_owner(select(*LISTED_WITH_OWNER))
    else:  # one owner, whose name is known: no join
        query = select(*LISTED, literal(owner_name).label("owner"))
    query = query.where(owner_clause, File.status != FileStatus.DELETED)
    if args.cursor is not None:
        key, file_id = cursors.decode(args.cursor, binding, 2)
        query = query.where(_after(column, _key_value(column, key), file_id, descending))
    order = (column.desc(), File.id.desc()) if descending else (column.asc(), File.id.asc())
    with pipeline().db.reading() as session:
        rows = session.execute(query.order_by(*order).limit(args.limit + 1)).all()
    has_more = len(rows) > args.limit
    rows = rows[: args.limit]
    url_of = download_urls()
    body: dict[str, Any] = {
        "items": [file_object_v2(row, url_of) for row in rows],
        "next_cursor": None,
        "has_more": has_more,
    }
    headers = {}
    if has_more:
        last = rows[-1]
        body["next_cursor"] = cursors.encode(
            [_key_text(getattr(last, column.key)), last.id], binding
        )
        params = request.args.to_dict(flat=False) | {"cursor": [body["next_cursor"]]}
        headers["Link"] = (
            f'<{url_for("v2_files.list_files", _external=True, **params)}>; rel="next"'
        )
    return jsonify(body), 200, headers


def _owner(who: Caller, owner: str | None) -> tuple[ColumnElement[bool], Any, str | None]:
    """Whose files a listing shows (a condition, a key for the cursor, the username): the
    caller's; an admin may name anyone ('*': everyone)."""
    if owner is None or owner == who.username:
        return File.owner_id == who.user_id, who.user_id, who.username
    if not who.is_admin:
        raise forbidden()
    if owner == "*":
        return visible_files(who), "*", None
    with pipeline().db.reading() as session:
        found = session.execute(
            select(User.id, User.username).where(User.username_key == identity_key(owner))
        ).first()
    user_id, username = found if found else (None, owner)
    return File.owner_id == user_id, user_id, username


def _after(column, key: Any, file_id: int, descending: bool) -> ColumnElement[bool]:
    """Rows after (key, id) in the listing's order: one row comparison, served by an index."""
    this = tuple_(column, File.id)
    that = tuple_(literal(key, column.type), literal(file_id))
    return this < that if descending else this > that


def _key_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _key_value(column, value: Any) -> Any:
    if isinstance(column.type, UTCDateTime):
        try:
            return datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise cursors.invalid(
                "the cursor is damaged or was not issued by this service"
            ) from None
    return value


@bp.get("/files/<path:name>")
@guarded(FILES_READ)
@spec_v2.validate(resp=replies({"HTTP_200": FileV2}, 401, 403, 404), tags=["files"])
def info(name: str):
    """One file's state and metadata."""
    return jsonify(file_object_v2(load(name, current_caller())))


@bp.get("/files/<path:name>/download")
@guarded(FILES_READ)
@spec_v2.validate(
    query=DownloadQuery,
    resp=replies({"HTTP_200": DownloadReply, "HTTP_302": None}, 401, 403, 404, 409),
    tags=["files"],
)
def download(name: str):
    """A presigned URL for a stored file; with ?redirect=1, a 302 to it."""
    file = load(name, current_caller())
    if file.status != FileStatus.STORED:
        raise not_ready(file)
    if request.context.query.redirect:
        url = download_urls(fresh=True)(file)
        return redirect(urljoin(request.host_url, url), 302)
    return jsonify(download_reply(file, file_object_v2))


@bp.delete("/files/<path:name>")
@guarded(FILES_WRITE)
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403, 404), tags=["files"])
def delete(name: str):
    """Delete a file and its stored object."""
    visible = visible_files(current_caller())
    if not is_generated_name(name) or not pipeline().delete(name, visible):
        raise not_found()
    return "", 204

"""v2 file routes: upload, list (keyset pages), info, download, delete (docs/API.md,
"Files in v2"). Every route acts on the caller's files only (admins: every file); another
user's file is answered exactly as a missing one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from flask import Blueprint, jsonify, redirect, request, url_for
from sqlalchemy import Row, Select

from api import cursors, errors
from api.auth import FILES_READ, FILES_WRITE, Caller, forbidden, guarded, visible_files
from api.auth import caller as current_caller
from api.bodies import json_object_body
from api.fileops import (
    accept_upload,
    answer_upload,
    download_reply,
    file_object_v2,
    invalid_label,
    issue_download,
    load,
    not_found,
    not_ready,
    pipeline,
    refresh,
    v2_objects,
)
from api.schemas import DownloadReply, replies, spec_v2
from api.v2.schemas import (
    DownloadQuery,
    FileListQuery,
    FilePage,
    FilePatch,
    FileV2,
    LabelCounts,
    UploadFormV2,
)
from common.files import actions, labels, queries
from common.models import FileStatus, UTCDateTime
from common.naming import is_generated_name

bp = Blueprint("v2_files", __name__, url_prefix="/api/v2")


@bp.post("/files")
@guarded(FILES_WRITE)
@spec_v2.validate(
    form=UploadFormV2,
    resp=replies({"HTTP_201": FileV2}, 400, 401, 403, 413, 415, 422),
    tags=["files"],
    skip_validation=True,  # the body is streamed by stage_upload, never parsed as a form
)
def upload():
    """Upload one file (multipart part 'file'); 'Prefer: wait=N' waits for the result."""
    accepted = accept_upload(current_caller(), labelled=True)
    file, headers = answer_upload(accepted, "v2_files.info")
    return jsonify(file_object_v2(file, tags=accepted.tags)), 201, headers


@bp.get("/files")
@guarded(FILES_READ)
@spec_v2.validate(
    query=FileListQuery, resp=replies({"HTTP_200": FilePage}, 400, 401, 403), tags=["files"]
)
def list_files():
    """The caller's live files, a page at a time (keyset cursors), newest first by default."""
    args: FileListQuery = request.context.query
    listing = Listing.of(args, current_caller())
    with pipeline().db.reading() as session:
        rows = queries.page_rows(session, listing.query)
    has_more = len(rows) > args.limit
    rows = rows[: args.limit]
    body: dict[str, Any] = {
        "items": v2_objects(rows),
        "next_cursor": None,
        "has_more": has_more,
    }
    headers = {}
    if has_more:
        body["next_cursor"] = listing.cursor_after(rows[-1])
        params = request.args.to_dict(flat=False) | {"cursor": [body["next_cursor"]]}
        headers["Link"] = (
            f'<{url_for("v2_files.list_files", _external=True, **params)}>; rel="next"'
        )
    return jsonify(body), 200, headers


@dataclass
class Listing:
    """A listing as the API asks for it: the page's query (``queries.Page``) and what its
    cursors are bound to (same caller, owner, filters and sort)."""

    query: Select
    column: Any
    binding: dict[str, Any]

    @classmethod
    def of(cls, args: FileListQuery, who: Caller) -> Listing:
        try:
            filters = queries.Filters.normal(
                tags=args.tag,
                category=args.category,
                statuses=args.status,
                q=args.q,
                prefix=args.prefix,
                content_type=args.content_type,
                min_size=args.min_size,
                max_size=args.max_size,
                uploaded_after=args.uploaded_after,
                uploaded_before=args.uploaded_before,
            )
        except labels.InvalidLabel as exc:
            raise invalid_label(exc) from None
        if args.owner not in (None, who.username) and not who.is_admin:
            raise forbidden()
        with pipeline().db.reading() as session:
            owner = queries.owner_of_listing(
                session, args.owner, who.user_id, who.username, is_admin=who.is_admin
            )
        binding = {"caller": who.user_id, "owner": owner.key, "sort": args.sort}
        binding |= filters.binding()
        column = queries.SORT_COLUMNS[args.sort.lstrip("-")]
        after = None
        if args.cursor is not None:
            key, file_id = cursors.decode(args.cursor, binding, 2)
            after = (_key_value(column, key), file_id)
        page = queries.Page.of(owner, filters, args.sort, args.limit, after)
        return cls(page.query, page.column, binding)

    def cursor_after(self, row: Row) -> str:
        return cursors.encode([_key_text(getattr(row, self.column.key)), row.id], self.binding)


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
        url = issue_download(file)
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


@bp.patch("/files/<path:name>")
@guarded(FILES_WRITE)
@json_object_body
@spec_v2.validate(
    json=FilePatch, resp=replies({"HTTP_200": FileV2}, 400, 401, 403, 404, 413, 415), tags=["files"]
)
def patch(name: str):
    """Change a file's display name, category and tags (JSON Merge Patch)."""
    body: FilePatch = request.context.json
    file = load(name, current_caller())
    try:
        category = actions.UNCHANGED
        if "category" in request.get_json():
            category = labels.normalise(body.category) if body.category else None
        change = actions.FileChange(
            original_name=body.original_name,
            category=category,
            tags=labels.normalise_all(body.tags) if body.tags is not None else None,
            add_tags=labels.normalise_all(body.add_tags or []),
            remove_tags=sorted({labels.normalise(tag) for tag in body.remove_tags or []}),
        )
        tags = actions.do_update_file(pipeline().db, file.id, file.original_name, change)
    except labels.InvalidLabel as exc:
        raise invalid_label(exc) from None
    except actions.ExtensionChanged as exc:
        raise errors.VALIDATION_ERROR.at("original_name", str(exc)) from None
    except actions.FileGone:
        raise not_found() from None
    return jsonify(file_object_v2(refresh(file), tags=tags))


@bp.get("/tags")
@guarded(FILES_READ)
@spec_v2.validate(resp=replies({"HTTP_200": LabelCounts}, 401, 403), tags=["files"])
def list_tags():
    """The caller's tags, each with how many of their live files carry it."""
    with pipeline().db.reading() as session:
        rows = queries.tag_counts(session, current_caller().user_id)
    return jsonify({"items": [{"name": name, "count": count} for name, count in rows]})


@bp.get("/categories")
@guarded(FILES_READ)
@spec_v2.validate(resp=replies({"HTTP_200": LabelCounts}, 401, 403), tags=["files"])
def list_categories():
    """The caller's categories, each with how many of their live files are in it."""
    with pipeline().db.reading() as session:
        rows = queries.category_counts(session, current_caller().user_id)
    return jsonify({"items": [{"name": name, "count": count} for name, count in rows]})

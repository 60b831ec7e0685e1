"""File routes: upload, list, info, download, delete (docs/API.md, v1).

With ``V1_ACCESS=open`` they take no credentials and act on ownerless files only; with
``token`` they need a caller, as v2 does, and act on the caller's files only.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.auth import FILES_READ, FILES_WRITE, caller, guarded, visible_files
from api.fileops import (
    accept_upload,
    answer_upload,
    download_reply,
    download_urls,
    file_object,
    load,
    not_found,
    not_ready,
    pipeline,
)
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
from common.files import queries
from common.models import FileStatus
from common.naming import is_generated_name

bp = Blueprint("files", __name__)


@bp.post("/files/upload")
@guarded(FILES_WRITE, v1=True)
@spec.validate(
    form=UploadForm,
    resp=replies({"HTTP_201": UploadReply}, 400, 413, 415, 422),
    tags=["files"],
    skip_validation=True,  # the body is streamed by stage_upload, never parsed as a form
)
def upload():
    """Upload one file (multipart part 'file'); 'Prefer: wait=N' waits for the result."""
    file, headers = answer_upload(accept_upload(caller()), f"{request.blueprint}.info")
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


@bp.get("/files")
@guarded(FILES_READ, v1=True)
@spec.validate(query=FileQuery, resp=replies({"HTTP_200": FileList}, 400), tags=["files"])
def list_files():
    """Live files whose name starts with 'prefix', in name (upload) order."""
    query_args: FileQuery = request.context.query
    prefix, limit = query_args.prefix, query_args.limit
    who = caller()
    # A listing shows the caller's own files, admins' too (they reach others' by name).
    mine = queries.visible_to(who.user_id if who else None)
    with pipeline().db.reading() as session:
        files = queries.by_name(session, prefix, limit, mine)
    url_of = download_urls()
    entries = [file_object(f, url_of) for f in files]
    return jsonify({"files": entries, "count": len(entries), "prefix": prefix})


@bp.get("/files/<path:name>/info")
@guarded(FILES_READ, v1=True)
@spec.validate(resp=replies({"HTTP_200": FileObject}, 404), tags=["files"])
def info(name: str):
    """One file's state and metadata."""
    return jsonify(file_object(load(name, caller())))


@bp.get("/files/<path:name>/download")
@guarded(FILES_READ, v1=True)
@spec.validate(resp=replies({"HTTP_200": DownloadReply}, 404, 409), tags=["files"])
def download(name: str):
    """A presigned URL for a stored file."""
    file = load(name, caller())
    if file.status != FileStatus.STORED:
        raise not_ready(file)
    return jsonify(download_reply(file, file_object))


@bp.delete("/files/<path:name>")
@guarded(FILES_WRITE, v1=True)
@spec.validate(resp=replies({"HTTP_200": DeleteReply}, 404), tags=["files"])
def delete(name: str):
    """Delete a file and its stored object."""
    if not is_generated_name(name) or not pipeline().delete(name, visible_files(caller())):
        raise not_found()
    return jsonify({"message": "Файл успешно удален", "filename": name})

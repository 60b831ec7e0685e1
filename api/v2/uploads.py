"""Direct uploads (docs/API.md, "Direct uploads"): declare a file, send its parts to signed
URLs, complete. The work is ``common.files.direct``'s; these routes parse, authorise, call it
and render."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from api import errors
from api.auth import FILES_WRITE, authenticate, guarded
from api.errors import ApiError
from api.fileops import file_object_v2, invalid_label, pipeline, quota_exceeded
from api.schemas import replies, spec_v2
from api.services import settings
from api.v2.schemas import (
    PartNumbers,
    PartReceived,
    PartUrls,
    UploadCompleted,
    UploadCreate,
    UploadCreated,
    UploadStateReply,
)
from common.fileinfo import iso_z
from common.files import direct, labels, queries, usage
from common.models import DirectUpload, UploadState
from common.naming import clean_original_name, extension_of

bp = Blueprint("v2_uploads", __name__, url_prefix="/api/v2")

#: What ``direct.UploadProblem`` codes are answered with.
_PROBLEMS = {
    "VALIDATION_ERROR": errors.VALIDATION_ERROR,
    "INVALID_SIGNATURE": errors.INVALID_SIGNATURE,
    "UPLOAD_CLOSED": errors.UPLOAD_CLOSED,
    "PARTS_MISSING": errors.PARTS_MISSING,
    "PART_SIZE_MISMATCH": errors.PART_SIZE_MISMATCH,
    "CHECKSUM_MISMATCH": errors.CHECKSUM_MISMATCH,
}


def _problem(exc: direct.UploadProblem) -> ApiError:
    return _PROBLEMS[exc.code]({"reason": exc.detail, **exc.facts})


def _owned(upload_id: str) -> DirectUpload:
    caller = authenticate()
    with pipeline().db.reading() as session:
        upload = direct.upload_of(session, upload_id, None if caller.is_admin else caller.user_id)
    if upload is None:
        raise errors.UPLOAD_NOT_FOUND()
    return upload


def _part_urls(upload: DirectUpload, parts) -> list[dict[str, Any]]:
    urls = []
    for part in parts:
        signed = direct.part_url(pipeline(), upload, part, request.host_url)
        urls.append(
            {
                "part_number": part.part_number,
                "size": part.size,
                "url": signed.url,
                "headers": signed.headers,
            }
        )
    return urls


@bp.post("/uploads")
@guarded(FILES_WRITE)
@spec_v2.validate(
    json=UploadCreate,
    resp=replies({"HTTP_201": UploadCreated}, 400, 401, 403, 413, 415),
    tags=["uploads"],
)
def create_upload():
    """Declare a file; its declared bytes are reserved against the caller's quota, then one
    signed URL per part is given."""
    body: UploadCreate = request.context.json
    caller = authenticate()
    limits = settings()
    original_name = clean_original_name(body.filename)
    extension = extension_of(original_name)
    if extension not in limits.allowed_extensions:
        raise errors.EXTENSION_NOT_ALLOWED(
            {"extension": extension}, allowed_extensions=list(limits.allowed_extensions)
        )
    if body.size > limits.max_direct_upload_mb * direct.MIB:
        raise errors.FILE_TOO_LARGE(max_size_mb=limits.max_direct_upload_mb)
    try:
        tags = labels.normalise_all(body.tags or [])
        category = labels.normalise(body.category) if body.category else None
    except labels.InvalidLabel as exc:
        raise invalid_label(exc) from None
    declared = direct.Declared(
        owner_id=caller.user_id,
        original_name=original_name,
        extension=extension,
        size=body.size,
        sha256=body.sha256,
        part_sha256=body.part_sha256,
        tags=tags,
        category=category,
    )
    try:
        upload = direct.do_create_upload(pipeline(), declared)
    except usage.QuotaExceeded as exc:
        raise quota_exceeded(exc.used, exc.quota, exc.size) from None
    except direct.UploadProblem as exc:
        raise _problem(exc) from None
    with pipeline().db.reading() as session:
        parts = direct.ledger(session, upload.id)
    reply = jsonify(
        upload_id=upload.id,
        part_size=upload.part_size,
        parts=_part_urls(upload, parts),
        expires_at=iso_z(upload.expires_at),
    )
    return reply, 201


@bp.get("/uploads/<upload_id>")
@guarded(FILES_WRITE)
@spec_v2.validate(resp=replies({"HTTP_200": UploadStateReply}, 401, 403, 404), tags=["uploads"])
def upload_state(upload_id: str):
    """The upload's state and the parts received: what a client resuming sends next."""
    upload = _owned(upload_id)
    parts = direct.current_ledger(pipeline(), upload)
    with pipeline().db.reading() as session:
        file = (
            queries.file_by_id(session, upload.file_id)
            if upload.state == UploadState.COMPLETED and upload.file_id is not None
            else None
        )
    return jsonify(
        upload_id=upload.id,
        state=upload.state.value,
        filename=upload.original_name,
        size=upload.size,
        part_size=upload.part_size,
        parts=[
            {
                "part_number": p.part_number,
                "size": p.size,
                "received": p.received_at is not None,
                "etag": p.etag,
                "sha256": p.sha256,
            }
            for p in parts
        ],
        expires_at=iso_z(upload.expires_at),
        file=file_object_v2(file) if file is not None else None,
    )


@bp.post("/uploads/<upload_id>/parts")
@guarded(FILES_WRITE)
@spec_v2.validate(
    json=PartNumbers, resp=replies({"HTTP_200": PartUrls}, 400, 401, 403, 404, 409),
    tags=["uploads"],
)  # fmt: skip
def fresh_part_urls(upload_id: str):
    """Fresh URLs for some parts (the first ones expired)."""
    upload = _owned(upload_id)
    if upload.state != UploadState.OPEN:
        raise errors.UPLOAD_CLOSED({"state": upload.state.value})
    wanted = set(request.context.json.part_numbers)
    with pipeline().db.reading() as session:
        parts = [p for p in direct.ledger(session, upload.id) if p.part_number in wanted]
    unknown = sorted(wanted - {p.part_number for p in parts})
    if unknown:
        raise errors.VALIDATION_ERROR.at("part_numbers", f"no such parts: {unknown[:20]}")
    return jsonify(parts=_part_urls(upload, parts))


@bp.put("/uploads/<upload_id>/parts/<int:number>")
@spec_v2.validate(resp=replies({"HTTP_200": PartReceived}, 400, 403, 404, 409), tags=["uploads"])
def receive_part(upload_id: str, number: int):
    """A part's bytes, PUT to the signed URL the upload gave for it (the filesystem store's
    way; the URL is the credential)."""
    try:
        etag = direct.do_receive_part(
            pipeline(),
            upload_id,
            number,
            request.args.get("expires", ""),
            request.args.get("signature", ""),
            request.stream,
            request.content_length,
        )
    except direct.UploadProblem as exc:
        raise _problem(exc) from None
    reply = jsonify(part_number=number, etag=etag)
    reply.headers["ETag"] = etag
    return reply


@bp.post("/uploads/<upload_id>/complete")
@guarded(FILES_WRITE)
@spec_v2.validate(
    resp=replies({"HTTP_202": UploadCompleted}, 400, 401, 403, 404, 409), tags=["uploads"]
)
def complete_upload(upload_id: str):
    """Finish the upload: its file, as it is when answered (verified and stored by a worker, as
    any upload). The same file however often it is asked."""
    upload = _owned(upload_id)
    try:
        file = direct.do_complete_upload(pipeline(), upload)
    except direct.UploadProblem as exc:
        raise _problem(exc) from None
    with pipeline().db.reading() as session:
        row = queries.file_by_id(session, file.id)
    return jsonify(upload_id=upload.id, state="completed", file=file_object_v2(row)), 202


@bp.delete("/uploads/<upload_id>")
@guarded(FILES_WRITE)
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403, 404, 409), tags=["uploads"])
def abort_upload(upload_id: str):
    """Abort: the parts go, the reserved bytes are freed (again: the same answer)."""
    upload = direct.do_abort_upload(pipeline(), _owned(upload_id))
    if upload.state == UploadState.COMPLETED:
        raise errors.UPLOAD_CLOSED({"state": upload.state.value})
    return "", 204

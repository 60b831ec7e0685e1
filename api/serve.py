"""``/storage/<key>``: serves the filesystem store's signed URLs (STORAGE_BACKEND=filesystem)."""

from __future__ import annotations

from flask import Blueprint, request, send_file

from api import errors, services
from common.storage import content_disposition

bp = Blueprint("serve", __name__)


@bp.get("/storage/<path:key>")
def serve_object(key: str):
    storage = services.pipeline().storage
    if not storage.serves_signed_urls:
        raise errors.NOT_FOUND()
    args = request.args
    filename = args.get("filename")  # signed with the rest: the file's name when signed
    if not storage.verify(key, args.get("expires", ""), args.get("signature", ""), filename):
        raise errors.INVALID_SIGNATURE()
    try:
        sidecar = storage.sidecar(key)
        response = send_file(
            storage.object_path(key),
            mimetype=sidecar["content_type"],
            etag=sidecar["etag"],
            conditional=True,
            max_age=0,
        )
    except FileNotFoundError:
        raise errors.FILE_NOT_FOUND() from None
    response.headers["Content-Type"] = sidecar["content_type"]  # exactly as stored
    response.headers["Content-Disposition"] = (
        content_disposition(filename) if filename is not None else sidecar["content_disposition"]
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

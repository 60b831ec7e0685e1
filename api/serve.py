"""``/storage/<key>``: serves the filesystem store's signed URLs (STORAGE_BACKEND=filesystem)."""

from __future__ import annotations

from flask import Blueprint, current_app, request, send_file

from api.errors import ApiError
from common.storage import content_disposition

bp = Blueprint("serve", __name__)


@bp.get("/storage/<path:key>")
def serve_object(key: str):
    storage = current_app.extensions["pipeline"].storage
    if not storage.serves_signed_urls:
        raise ApiError(404, "NOT_FOUND", "Ресурс не найден")
    args = request.args
    filename = args.get("filename")  # signed with the rest: the file's name when signed
    if not storage.verify(key, args.get("expires", ""), args.get("signature", ""), filename):
        raise ApiError(403, "INVALID_SIGNATURE", "Ссылка недействительна или истекла")
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
        raise ApiError(404, "FILE_NOT_FOUND", "Файл не найден") from None
    response.headers["Content-Type"] = sidecar["content_type"]  # exactly as stored
    response.headers["Content-Disposition"] = (
        content_disposition(filename) if filename is not None else sidecar["content_disposition"]
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

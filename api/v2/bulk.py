"""``POST /api/v2/files/bulk``: one action on up to 1000 of the caller's files (docs/API.md,
"Bulk").

Each name succeeds or fails on its own (a name that is not the caller's live file fails alone
with ``FILE_NOT_FOUND``), and the database sees a bounded number of statements per batch, not
one per name: one to find the files, a few to act on all of them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from api import errors
from api.auth import FILES_WRITE, guarded, visible_files
from api.auth import caller as current_caller
from api.bodies import json_object_body
from api.errors import ApiError
from api.fileops import invalid_label, pipeline
from api.schemas import replies, spec_v2
from api.v2.schemas import BulkIn, BulkReply
from common.files import actions, labels, queries
from common.naming import is_generated_name

bp = Blueprint("v2_bulk", __name__, url_prefix="/api/v2")

NOT_FOUND = "FILE_NOT_FOUND"
TOO_MANY_TAGS = "TOO_MANY_TAGS"


@bp.post("/files/bulk")
@guarded(FILES_WRITE)
@json_object_body
@spec_v2.validate(
    json=BulkIn, resp=replies({"HTTP_200": BulkReply}, 400, 401, 403, 413, 415), tags=["files"]
)
def bulk():
    """delete, tag, untag or set_category on 1..1000 files: a result for each name."""
    body: BulkIn = request.context.json
    try:
        tags = labels.normalise_all(body.tags or [])
        category = labels.normalise(body.category) if body.category else None
    except labels.InvalidLabel as exc:
        raise invalid_label(exc) from None
    if body.action in ("tag", "untag") and not tags:
        raise _missing("tags")
    if body.action == "set_category" and "category" not in request.get_json():
        raise _missing("category")
    wanted = [name for name in dict.fromkeys(body.names) if is_generated_name(name)]
    with pipeline().db.reading() as session:
        found = queries.named(session, wanted, visible_files(current_caller()))
    failures: dict[str, str] = {name: NOT_FOUND for name in body.names if name not in found}
    ids = list(found.values())
    if body.action == "delete":
        done = set(pipeline().delete_many(ids))
        failures |= {name: NOT_FOUND for name, i in found.items() if i not in done}
    elif body.action == "tag":
        over = actions.do_tag_files(pipeline().db, found, tags)
        failures |= {name: TOO_MANY_TAGS for name in over}
    elif body.action == "untag":
        actions.do_untag_files(pipeline().db, ids, tags)
    else:
        actions.do_set_category(pipeline().db, ids, category)
    results: list[dict[str, Any]] = []
    for name in body.names:
        code = failures.get(name)
        results.append(
            {"name": name, "ok": True}
            if code is None
            else {"name": name, "ok": False, "code": code}
        )
    failed = sum(1 for r in results if not r["ok"])
    return jsonify({"results": results, "succeeded": len(results) - failed, "failed": failed})


def _missing(field: str) -> ApiError:
    return errors.VALIDATION_ERROR.at(field, f"{field} is required")

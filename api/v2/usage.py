"""Usage analytics (docs/API.md, "Usage"): the caller's totals and days, and every account's
totals for admins. Read from the counters kept as the work happens (``common.files.usage``)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, jsonify, request

from api import cursors, errors
from api.auth import authenticate, forbidden, guarded, require_admin
from api.schemas import Status, replies, spec_v2
from api.services import accounts
from api.v2.schemas import (
    MAX_USAGE_DAYS,
    AdminUsagePage,
    AdminUsageQuery,
    UsageQuery,
    UsageReply,
)
from common.accounts import users
from common.files import usage
from common.models import FileStatus, utcnow

bp = Blueprint("v2_usage", __name__, url_prefix="/api/v2")

#: The days a request covers when it names none.
DEFAULT_DAYS = 30


def totals_object(totals: dict[FileStatus, tuple[int, int]]) -> dict[str, Any]:
    """``usage`` of ``/me`` and of these routes: live files by status, bytes stored."""
    by_status: dict[str, int] = {status: 0 for status in Status.__args__}
    for status, (count, _size) in totals.items():
        by_status[status.value] = count
    return {
        "files": sum(count for count, _size in totals.values()),
        "bytes_stored": totals.get(FileStatus.STORED, (0, 0))[1],
        "by_status": by_status,
    }


@bp.get("/usage")
@guarded(None)
@spec_v2.validate(
    query=UsageQuery, resp=replies({"HTTP_200": UsageReply}, 400, 401, 403, 404), tags=["usage"]
)
def my_usage():
    """The caller's totals, and what was done each day from ``from`` to ``to``."""
    args: UsageQuery = request.context.query
    caller = authenticate()
    last = args.to or utcnow().date()
    try:
        first = args.from_ or last - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # a `to` in the first days of year 1
        first = date.min
    if first > last or (last - first).days + 1 > MAX_USAGE_DAYS:
        raise errors.VALIDATION_ERROR.at(
            "from", f"a range of 1 to {MAX_USAGE_DAYS} days, from <= to"
        )
    user_id = caller.user_id
    with accounts().db.reading() as session:
        if args.user is not None and args.user != caller.username:
            if not caller.is_admin:
                raise forbidden()
            found = users.account_named(session, args.user)
            if found is None or found.deleted_at is not None:
                raise errors.USER_NOT_FOUND()
            user_id = found.id
        totals = usage.totals_of(session, user_id)
        days = {row.day: row for row in usage.days_of(session, user_id, first, last)}
    daily = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        row = days.get(day)
        counts = {name: getattr(row, name) if row else 0 for name in usage.DAILY}
        daily.append({"date": day.isoformat(), **counts})
    return jsonify({"totals": totals_object(totals), "daily": daily})


@bp.get("/admin/usage")
@guarded(None)
@spec_v2.validate(
    query=AdminUsageQuery,
    resp=replies({"HTTP_200": AdminUsagePage}, 400, 401, 403),
    tags=["usage"],
)
def all_usage():
    """Admins: every account's totals, a page at a time (by account id)."""
    require_admin(authenticate())
    args: AdminUsageQuery = request.context.query
    binding = {"listing": "admin-usage"}
    after = cursors.decode(args.cursor, binding, 1)[0] if args.cursor else 0
    if not isinstance(after, int):
        raise cursors.invalid("the cursor is damaged or was not issued by this service")
    with accounts().db.reading() as session:
        rows = usage.accounts_page(session, after, args.limit)
        page = rows[: args.limit]
        totals = usage.totals_of_many(session, [user_id for user_id, _name in page])
    items = [
        {"user_id": user_id, "username": name, "totals": totals_object(totals[user_id])}
        for user_id, name in page
    ]
    has_more = len(rows) > args.limit
    next_cursor = cursors.encode([page[-1][0]], binding) if has_more else None
    return jsonify({"items": items, "next_cursor": next_cursor, "has_more": has_more})

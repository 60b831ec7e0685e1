"""Where the live status is (docs/API.md, "Live status"): ``GET /api/v2`` names the realtime
process's routes, ``POST /api/v2/events/ticket`` gives a browser's ``EventSource`` (which cannot
send headers) a single-use ticket for them. The streams themselves are the realtime process's
(``realtime``), a process type of its own."""

from __future__ import annotations

import redis
from flask import Blueprint, jsonify, request

from api import errors
from api.auth import FILES_READ, authenticate, bearer_token, guarded
from api.schemas import replies, spec_v2
from api.services import accounts, settings
from api.v2.schemas import Discovery, EventsTicket
from common.accounts import keys, tickets

bp = Blueprint("v2_events", __name__, url_prefix="/api/v2")


@bp.get("")
@spec_v2.validate(resp=replies({"HTTP_200": Discovery}), tags=["events"])
def discovery():
    """The API's version, where its live events are, and the part size of direct uploads (no
    credentials needed)."""
    base = (settings().realtime_url or request.host_url).rstrip("/")
    ws_base = "ws" + base.removeprefix("http")  # http -> ws, https -> wss
    return jsonify(
        version="2",
        events_url=f"{base}/api/v2/events",
        ws_url=f"{ws_base}/api/v2/ws",
        upload_part_size=settings().upload_part_mb * 1024 * 1024,
        max_upload_size=settings().max_upload_bytes,
        registration=settings().registration,
    )


@bp.post("/events/ticket")
@guarded(FILES_READ)
@spec_v2.validate(resp=replies({"HTTP_200": EventsTicket}, 401, 403), tags=["events"])
def events_ticket():
    """A single-use ticket, valid 60 s, standing for the caller's credential."""
    caller = authenticate()
    if caller.session_id is not None:
        ref = ("login", caller.session_id)
    else:
        ref = ("key", keys.digest_of(bearer_token()))
    try:
        ticket = tickets.issue(accounts(), ref)
    except (redis.RedisError, OSError):  # tickets live in Redis alone
        raise errors.SERVICE_UNAVAILABLE(headers={"Retry-After": "1"}) from None
    return jsonify(ticket=ticket, expires_in=tickets.TTL)

"""API keys of the caller (docs/API.md, "API keys"). Managing keys needs a password login
(a JWT): a key cannot make or list keys."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api import errors
from api.auth import ACCOUNT, guarded
from api.auth import caller as current_caller
from api.bodies import json_object_body
from api.schemas import replies, spec_v2
from api.services import accounts
from api.v2.schemas import KeyCreated, KeyIn, KeyList
from common.accounts import keys
from common.fileinfo import iso_z
from common.models import ApiKey

#: The largest id an ``Integer`` column holds (PostgreSQL's int4).
MAX_ID = 2**31 - 1

bp = Blueprint("v2_keys", __name__, url_prefix="/api/v2")


def key_object(key: ApiKey) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes.split(),
        "created_at": iso_z(key.created_at),
        "last_used_at": iso_z(key.last_used_at) if key.last_used_at else None,
    }


@bp.post("/keys")
@guarded(ACCOUNT)
@json_object_body
@spec_v2.validate(
    json=KeyIn, resp=replies({"HTTP_201": KeyCreated}, 400, 401, 403, 413, 415), tags=["keys"]
)
def create_key():
    """A new API key; the reply is the only time the key itself is shown."""
    body: KeyIn = request.context.json
    scopes = list(dict.fromkeys(body.scopes))
    row, key = keys.do_create_key(accounts(), current_caller().user_id, body.name, scopes)
    return jsonify(key_object(row) | {"key": key}), 201, {"Cache-Control": "no-store"}


@bp.get("/keys")
@guarded(ACCOUNT)
@spec_v2.validate(resp=replies({"HTTP_200": KeyList}, 401, 403), tags=["keys"])
def list_keys():
    """The caller's keys (never the keys themselves)."""
    found = keys.keys_of(accounts(), current_caller().user_id)
    return jsonify({"items": [key_object(k) for k in found]})


@bp.delete("/keys/<int:key_id>")
@guarded(ACCOUNT)
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403, 404), tags=["keys"])
def revoke_key(key_id: int):
    """Revoke a key: it is refused from the next request on."""
    if key_id > MAX_ID:  # beyond what the id column holds: no such key could exist
        raise errors.VALIDATION_ERROR.at("key_id", "out of range")
    who = current_caller()
    if not keys.do_revoke_key(accounts(), key_id, None if who.is_admin else who.user_id):
        raise errors.KEY_NOT_FOUND()
    return "", 204

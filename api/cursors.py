"""Opaque, signed listing cursors (docs/API.md, "Paging").

A cursor holds the sort keys of the last row of a page and a digest of what the listing was
asked for (whose files, filters, sort). It is signed with the service's key, so it cannot be
altered, and it is refused (400 ``INVALID_CURSOR``) when it comes back with another listing: a
changed filter or sort, or another caller.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from api import errors
from api.errors import ApiError

SALT = "files-cursor-v1"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def _digest(binding: dict[str, Any]) -> str:
    canonical = json.dumps(binding, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def invalid(reason: str) -> ApiError:
    return errors.INVALID_CURSOR(reason)


def encode(keys: list[Any], binding: dict[str, Any]) -> str:
    return _serializer().dumps({"k": keys, "b": _digest(binding)})


def decode(cursor: str, binding: dict[str, Any], arity: int) -> list[Any]:
    """The keys in ``cursor``; 400 when it is forged, damaged, or from another listing."""
    try:
        payload = _serializer().loads(cursor)
    except BadData:
        raise invalid("the cursor is damaged or was not issued by this service") from None
    if not isinstance(payload, dict) or payload.get("b") != _digest(binding):
        raise invalid("the cursor belongs to a listing with other parameters")
    keys = payload.get("k")
    if not isinstance(keys, list) or len(keys) != arity:
        raise invalid("the cursor is damaged or was not issued by this service")
    return keys

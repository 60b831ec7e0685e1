"""API keys on the wire: ``Authorization: Bearer upk_...`` (``common.accounts.keys``).

``last_used_at`` is written at most once a minute per key and API process, not per request.
"""

from __future__ import annotations

import threading
import time

from api.auth import Caller, unauthorized
from api.services import accounts, services
from common.accounts import keys

TOUCH_EVERY = 60.0
_touched_lock = threading.Lock()


def caller_for(key: str) -> Caller:
    digest = keys.digest_of(key)
    entry = keys.key_entry(accounts(), digest)
    if entry is None:
        raise unauthorized("unknown or revoked API key")
    _touch(entry["key"], digest)
    return Caller(
        user_id=entry["user"],
        username=entry["username"],
        is_admin=entry["admin"],
        scopes=frozenset(entry["scopes"]),
        key_id=entry["key"],
    )


def _touch(key_id: int, digest: str) -> None:
    now = time.monotonic()
    touched = services().key_touches
    with _touched_lock:  # by digest: an id may come again (a database emptied and refilled)
        if now - touched.get(digest, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        touched[digest] = now
    keys.do_touch_key(accounts(), key_id)

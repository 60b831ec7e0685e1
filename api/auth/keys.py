"""API keys: ``upk_`` and 32 random bytes (URL-safe base64), shown once and stored as their
SHA-256 (a key has 256 bits of entropy: a fast hash is enough, and the lookup stays one index
probe). What a key stands for is cached in Redis (``cache``); a deleted key is refused at once.

``last_used_at`` is written at most once a minute per key and API process, not per request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, select, update

from api.auth import KEY_PREFIX, Caller, unauthorized
from api.auth.cache import REVOKED
from common.models import ApiKey, User

TOUCH_EVERY = 60.0
_touched_lock = threading.Lock()


def _db():
    return current_app.extensions["pipeline"].db


def _cache_key(digest: str) -> str:
    return f"auth:key:{digest}"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(user_id: int, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """A new key for ``user_id``: the row, and the key itself (never stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        user_id=user_id,
        name=name,
        prefix=key[:12],
        key_hash=digest_of(key),
        scopes=" ".join(scopes),
    )
    with _db().session() as session:
        session.add(row)
    return row, key


def listed(user_id: int) -> list[ApiKey]:
    with _db().reading() as session:
        return list(
            session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id))
        )


def revoke(key_id: int, owner_id: int | None) -> bool:
    """Delete a key (``owner_id`` None: whoever owns it); False when there is no such key."""
    query = delete(ApiKey).where(ApiKey.id == key_id).returning(ApiKey.key_hash)
    if owner_id is not None:
        query = query.where(ApiKey.user_id == owner_id)
    with _db().session() as session:
        digest = session.execute(query).scalar_one_or_none()
    if digest is None:
        return False
    current_app.extensions["auth_cache"].revoke(_cache_key(digest))
    return True


def account_changed(user_id: int) -> None:
    """The account's rights changed (committed): its keys answer from the database next."""
    with _db().reading() as session:
        digests = session.scalars(select(ApiKey.key_hash).where(ApiKey.user_id == user_id)).all()
    for digest in digests:
        current_app.extensions["auth_cache"].invalidate(_cache_key(digest))


def revoke_all(user_id: int) -> int:
    """Delete every key of a user (a password reset that ends them); how many there were."""
    with _db().session() as session:
        digests = session.scalars(
            delete(ApiKey).where(ApiKey.user_id == user_id).returning(ApiKey.key_hash)
        ).all()
    for digest in digests:
        current_app.extensions["auth_cache"].revoke(_cache_key(digest))
    return len(digests)


def caller_for(key: str) -> Caller:
    digest = digest_of(key)

    def load() -> bytes:
        with _db().reading() as session:
            row = session.execute(
                select(ApiKey.id, ApiKey.scopes, User.id, User.username, User.is_admin)
                .join(User, User.id == ApiKey.user_id)
                .where(ApiKey.key_hash == digest)
            ).first()
        if row is None:
            return REVOKED
        key_id, scopes, user_id, username, is_admin = row
        entry: dict[str, Any] = {
            "key": key_id,
            "user": user_id,
            "username": username,
            "admin": is_admin,
            "scopes": scopes.split(),
        }
        return json.dumps(entry).encode()

    cached = current_app.extensions["auth_cache"].lookup(_cache_key(digest), load)
    if cached == REVOKED:
        raise unauthorized("unknown or revoked API key")
    entry = json.loads(cached)
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
    touched: dict[str, float] = current_app.extensions["api_key_touches"]
    with _touched_lock:  # by digest: an id may come again (a database emptied and refilled)
        if now - touched.get(digest, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        touched[digest] = now
    with _db().session() as session:
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=datetime.now(UTC))
        )

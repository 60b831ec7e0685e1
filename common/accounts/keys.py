"""API keys: ``upk_`` and 32 random bytes (URL-safe base64), shown once and stored as their
SHA-256 (a key has 256 bits of entropy: a fast hash is enough, and the lookup stays one index
probe). What a key stands for is cached (``cache``); a deleted key is refused at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update

from common.accounts import Accounts
from common.accounts.cache import REVOKED
from common.models import ApiKey, User

PREFIX = "upk_"


def _cache_key(digest: str) -> str:
    return f"auth:key:{digest}"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def do_create_key(
    accounts: Accounts, user_id: int, name: str, scopes: list[str]
) -> tuple[ApiKey, str]:
    """A new key for ``user_id``: the row, and the key itself (never stored)."""
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        user_id=user_id,
        name=name,
        prefix=key[:12],
        key_hash=digest_of(key),
        scopes=" ".join(scopes),
    )
    with accounts.db.session() as session:
        session.add(row)
    return row, key


def keys_of(accounts: Accounts, user_id: int) -> list[ApiKey]:
    with accounts.db.reading() as session:
        return list(
            session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id))
        )


def do_revoke_key(accounts: Accounts, key_id: int, owner_id: int | None) -> bool:
    """Delete a key (``owner_id`` None: whoever owns it); False when there is no such key."""
    query = delete(ApiKey).where(ApiKey.id == key_id).returning(ApiKey.key_hash)
    if owner_id is not None:
        query = query.where(ApiKey.user_id == owner_id)
    with accounts.db.session() as session:
        digest = session.execute(query).scalar_one_or_none()
    if digest is None:
        return False
    accounts.cache.revoke(_cache_key(digest))
    return True


def do_revoke_all_keys(accounts: Accounts, user_id: int) -> int:
    """Delete every key of a user (a stolen password, a deleted account); how many."""
    with accounts.db.session() as session:
        digests = session.scalars(
            delete(ApiKey).where(ApiKey.user_id == user_id).returning(ApiKey.key_hash)
        ).all()
    for digest in digests:
        accounts.cache.revoke(_cache_key(digest))
    return len(digests)


def keys_changed(accounts: Accounts, user_id: int) -> None:
    """The account's rights changed (committed): its keys answer from the database next."""
    with accounts.db.reading() as session:
        digests = session.scalars(select(ApiKey.key_hash).where(ApiKey.user_id == user_id)).all()
    for digest in digests:
        accounts.cache.invalidate(_cache_key(digest))


def key_entry(accounts: Accounts, digest: str) -> dict[str, Any] | None:
    """What the key of ``digest`` stands for (``key``, ``user``, ``username``, ``admin``,
    ``scopes``); None for an unknown or revoked key."""

    def load() -> bytes:
        with accounts.db.reading() as session:
            row = session.execute(
                select(ApiKey.id, ApiKey.scopes, User.id, User.username, User.is_admin)
                .join(User, User.id == ApiKey.user_id)
                .where(ApiKey.key_hash == digest)
            ).first()
        if row is None:
            return REVOKED
        key_id, scopes, user_id, username, is_admin = row
        entry = {
            "key": key_id,
            "user": user_id,
            "username": username,
            "admin": is_admin,
            "scopes": scopes.split(),
        }
        return json.dumps(entry).encode()

    cached = accounts.cache.lookup(_cache_key(digest), load)
    return None if cached == REVOKED else json.loads(cached)


def do_touch_key(accounts: Accounts, key_id: int) -> None:
    """Record that a key was used now (callers write this at most once a minute a key)."""
    with accounts.db.session() as session:
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=datetime.now(UTC))
        )

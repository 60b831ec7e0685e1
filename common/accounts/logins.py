"""Password logins (sessions): the database is their record, the cache remembers whether one
is live (``cache``). A login's tokens are the API's (api/auth/sessions.py); what they stand
for is decided here.

Refreshing swaps the session's expected refresh ``jti`` in one conditional UPDATE, so a refresh
token works once, also when two requests present it at the same moment.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from common.accounts import Accounts
from common.accounts.cache import REVOKED
from common.models import AuthSession, User


def _cache_key(session_id: str) -> str:
    return f"auth:session:{session_id}"


def do_open_login(accounts: Accounts, user_id: int, client: str | None) -> tuple[str, str]:
    """A new login of ``user_id`` from ``client`` (its address): its id and the refresh
    ``jti`` it expects first."""
    session_id, refresh_jti = secrets.token_hex(16), uuid.uuid4().hex
    ttl = accounts.settings.jwt_refresh_ttl
    with accounts.db.session() as session:
        session.add(
            AuthSession(
                id=session_id,
                user_id=user_id,
                refresh_jti=refresh_jti,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
                client=client,
            )
        )
    return session_id, refresh_jti


def login_state(accounts: Accounts, session_id: str) -> dict[str, Any] | None:
    """The account of a live login (``user``, ``username``, ``admin``); None once it ended
    (logged out, reused refresh token, SESSION_MAX_AGE, a new password, the account deleted)."""
    max_age = accounts.settings.session_max_age

    def load() -> bytes:
        oldest = datetime.now(UTC) - timedelta(seconds=max_age)
        with accounts.db.reading() as session:
            row = session.execute(
                select(User.id, User.username, User.is_admin, AuthSession.created_at)
                .join(User, User.id == AuthSession.user_id)
                .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            ).first()
        if row is None or row.created_at <= oldest:
            return REVOKED
        state = {"user": row.id, "username": row.username, "admin": row.is_admin}
        state["until"] = row.created_at.timestamp() + max_age
        return json.dumps(state).encode()

    cached = accounts.cache.lookup(_cache_key(session_id), load)
    if cached == REVOKED:
        return None
    state = json.loads(cached)
    return state if state["until"] > time.time() else None


def do_refresh_login(
    accounts: Accounts, session_id: str, presented: str
) -> tuple[User, str] | None:
    """Swap the login's expected refresh ``jti`` from ``presented`` to a new one: the account
    and the new ``jti``. A refresh token presented again after it was used ends its whole login
    (RFC 9700, 4.14.2): None then, as for an expired or ended login."""
    next_jti = uuid.uuid4().hex
    ttl = accounts.settings.jwt_refresh_ttl
    now = datetime.now(UTC)
    live = (
        AuthSession.id == session_id,
        AuthSession.revoked_at.is_(None),
        AuthSession.expires_at > now,
        AuthSession.created_at > now - timedelta(seconds=accounts.settings.session_max_age),
    )
    with accounts.db.session() as session:
        swapped = session.execute(
            update(AuthSession)
            .where(*live, AuthSession.refresh_jti == presented)
            .values(refresh_jti=next_jti, expires_at=now + timedelta(seconds=ttl))
        ).rowcount
        user = session.scalars(
            select(User)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(AuthSession.id == session_id)
        ).one_or_none()
    if swapped and user is not None:
        return user, next_jti
    do_revoke_login(accounts, session_id)  # reused, expired or already ended: over either way
    return None


def has_logged_in_from(accounts: Accounts, user_id: int, client: str) -> bool:
    """Whether ``client`` has opened a login of the account before."""
    with accounts.db.reading() as session:
        found = session.scalar(
            select(AuthSession.id)
            .where(AuthSession.user_id == user_id, AuthSession.client == client)
            .limit(1)
        )
    return found is not None


def do_revoke_login(accounts: Accounts, session_id: str) -> None:
    """End a login: its access and refresh tokens stop working at once."""
    with accounts.db.session() as session:
        session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    accounts.cache.revoke(_cache_key(session_id))


def _live_ids(accounts: Accounts, user_id: int) -> list[str]:
    with accounts.db.reading() as session:
        return list(
            session.scalars(
                select(AuthSession.id).where(
                    AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
                )
            )
        )


def do_revoke_all_logins(accounts: Accounts, user_id: int) -> int:
    """End every live login of a user (a new password); how many there were."""
    ids = _live_ids(accounts, user_id)
    for session_id in ids:
        do_revoke_login(accounts, session_id)
    return len(ids)


def logins_changed(accounts: Accounts, user_id: int) -> None:
    """The account's name or rights changed (committed): its logins answer from the database
    on their next use."""
    for session_id in _live_ids(accounts, user_id):
        accounts.cache.invalidate(_cache_key(session_id))

"""Logins: a password check opens a session; its tokens carry the session's id.

- access token: ``sub`` (user id), ``sid``, ``usr`` (username), ``adm`` (admin when issued:
  for the client to read; the service asks the account), 15 minutes;
- refresh token: ``sub``, ``sid``, and the ``jti`` the session expects next, 30 days.

Refreshing swaps the session's expected ``jti`` in one conditional UPDATE, so a refresh token
works once, also when two requests present it at the same moment; a used one presented again
ends the login. Logging out revokes the session: its access and refresh tokens stop working at
once.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from sqlalchemy import select, update

from api.auth import LOGIN_SCOPES, Caller, unauthorized
from api.auth.cache import REVOKED
from common.models import AuthSession, User

_BAD_TOKEN = (jwt.PyJWTError, JWTExtendedException, ValueError, TypeError, KeyError)


def _db():
    return current_app.extensions["pipeline"].db


def _cache():
    return current_app.extensions["auth_cache"]


def _cache_key(session_id: str) -> str:
    return f"auth:session:{session_id}"


def token_pair(user: User, session_id: str, refresh_jti: str) -> dict[str, Any]:
    identity = str(user.id)
    access = create_access_token(
        identity, additional_claims={"sid": session_id, "usr": user.username, "adm": user.is_admin}
    )
    refresh = create_refresh_token(
        identity, additional_claims={"sid": session_id, "jti": refresh_jti}
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": current_app.extensions["settings"].jwt_access_ttl,
    }


def open_session(user: User, client: str | None = None) -> dict[str, Any]:
    """A new login of ``user`` from ``client`` (its address), and its first pair."""
    session_id, refresh_jti = secrets.token_hex(16), uuid.uuid4().hex
    ttl = current_app.extensions["settings"].jwt_refresh_ttl
    with _db().session() as session:
        session.add(
            AuthSession(
                id=session_id,
                user_id=user.id,
                refresh_jti=refresh_jti,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
                client=client,
            )
        )
    return token_pair(user, session_id, refresh_jti)


class VerifiedTokens:
    """Claims of tokens whose signature was checked, by the token's exact text, until they
    expire: a client sends one access token for its whole life (15 minutes), and decoding it
    again (PyJWT validates base64 a character at a time) cost more than the rest of the check.
    Only the signature check is skipped: expiry is compared, and revocation asked, every time."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> dict[str, Any] | None:
        claims = self._items.get(token)
        if claims is not None and claims["exp"] > time.time():
            return claims
        return None

    def put(self, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[token] = claims


def _decode(token: str, kind: str) -> dict[str, Any]:
    """The claims of a well-formed, unexpired token of ``kind`` signed by this service."""
    verified: VerifiedTokens = current_app.extensions["verified_tokens"]
    claims = verified.get(token)
    if claims is None:
        claims = _verify(token)
        verified.put(token, claims)
    if claims.get("type") != kind:
        raise unauthorized(f"not an {kind} token" if kind == "access" else f"not a {kind} token")
    return claims


def _verify(token: str) -> dict[str, Any]:
    try:
        claims = decode_token(token)
    except jwt.ExpiredSignatureError:
        raise unauthorized("the token has expired") from None
    except _BAD_TOKEN:
        raise unauthorized("the token is malformed or not signed by this service") from None
    well_formed = (
        isinstance(claims.get("sid"), str)
        and str(claims.get("sub", "")).isdigit()
        and isinstance(claims.get("exp"), int)
    )
    if not well_formed:
        raise unauthorized("the token is malformed or not signed by this service")
    return claims


def caller_for(token: str) -> Caller:
    """The caller an access token stands for, unless its login ended (logged out, reused
    refresh token, SESSION_MAX_AGE, the account changed its password or was deleted). Who the
    caller is (name, admin) is the account's now, never the token's claims: a demotion
    holds from the next request on."""
    claims = _decode(token, "access")
    state = login_state(claims["sid"])
    if state is None or state["user"] != int(claims["sub"]):
        raise unauthorized("the token has been revoked")
    return Caller(
        user_id=state["user"],
        username=state["username"],
        is_admin=state["admin"],
        scopes=LOGIN_SCOPES,
        session_id=claims["sid"],
    )


def login_state(session_id: str) -> dict[str, Any] | None:
    """The account of a live login (``user``, ``username``, ``admin``); None once it ended."""

    def load() -> bytes:
        oldest = datetime.now(UTC) - timedelta(seconds=_max_age())
        with _db().reading() as session:
            row = session.execute(
                select(User.id, User.username, User.is_admin, AuthSession.created_at)
                .join(User, User.id == AuthSession.user_id)
                .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            ).first()
        if row is None or row.created_at <= oldest:
            return REVOKED
        state = {"user": row.id, "username": row.username, "admin": row.is_admin}
        state["until"] = row.created_at.timestamp() + _max_age()
        return json.dumps(state).encode()

    cached = _cache().lookup(_cache_key(session_id), load)
    if cached == REVOKED:
        return None
    state = json.loads(cached)
    return state if state["until"] > time.time() else None


def _max_age() -> int:
    return current_app.extensions["settings"].session_max_age


def refresh(token: str) -> dict[str, Any]:
    """A new pair for a refresh token, which stops working. A refresh token presented again
    after it was used ends its whole login (RFC 9700, 4.14.2): either a thief or its owner
    holds the newer one, and neither may go on. A login ends SESSION_MAX_AGE after its
    password check, however often it was refreshed."""
    claims = _decode(token, "refresh")
    session_id, presented = claims["sid"], claims["jti"]
    next_jti = uuid.uuid4().hex
    ttl = current_app.extensions["settings"].jwt_refresh_ttl
    now = datetime.now(UTC)
    live = (
        AuthSession.id == session_id,
        AuthSession.revoked_at.is_(None),
        AuthSession.expires_at > now,
        AuthSession.created_at > now - timedelta(seconds=_max_age()),
    )
    with _db().session() as session:
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
        return token_pair(user, session_id, next_jti)
    revoke(session_id)  # reused, expired or already ended: the login is over either way
    raise unauthorized("the refresh token has been used or revoked")


def revoke(session_id: str) -> None:
    with _db().session() as session:
        session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    _cache().revoke(_cache_key(session_id))


def account_changed(user_id: int) -> None:
    """The account's name or rights changed (committed): every credential it has answers
    from the database on its next use."""
    from api.auth import keys

    with _db().reading() as session:
        session_ids = session.scalars(
            select(AuthSession.id).where(
                AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
            )
        ).all()
    for session_id in session_ids:
        _cache().invalidate(_cache_key(session_id))
    keys.account_changed(user_id)


def revoke_all(user_id: int) -> int:
    """Every live session of a user (a new password); how many there were."""
    with _db().session() as session:
        ids = session.scalars(
            select(AuthSession.id).where(
                AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
            )
        ).all()
    for session_id in ids:
        revoke(session_id)
    return len(ids)

"""Logins: a password check opens a session; its tokens carry the session's id.

- access token: ``sub`` (user id), ``sid``, ``usr`` (username), ``adm`` (admin), 15 minutes;
- refresh token: ``sub``, ``sid``, and the ``jti`` the session expects next, 30 days.

Refreshing swaps the session's expected ``jti`` in one conditional UPDATE, so a refresh token
works once, also when two requests present it at the same moment; a used one is refused (the
pair issued for it stays valid: a client whose reply got lost in transit and that retries must
not lose a pair it may yet hold). Logging out revokes the session: its access and refresh
tokens stop working at once.
"""

from __future__ import annotations

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


def open_session(user: User) -> dict[str, Any]:
    session_id, refresh_jti = secrets.token_hex(16), uuid.uuid4().hex
    ttl = current_app.extensions["settings"].jwt_refresh_ttl
    with _db().session() as session:
        session.add(
            AuthSession(
                id=session_id,
                user_id=user.id,
                refresh_jti=refresh_jti,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
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
    """The caller an access token stands for, unless its session was revoked."""
    claims = _decode(token, "access")
    if not is_live(claims["sid"]):
        raise unauthorized("the token has been revoked")
    return Caller(
        user_id=int(claims["sub"]),
        username=str(claims.get("usr", "")),
        is_admin=claims.get("adm") is True,
        scopes=LOGIN_SCOPES,
        session_id=claims["sid"],
    )


def is_live(session_id: str) -> bool:
    def load() -> bytes:
        with _db().reading() as session:
            revoked_at = session.execute(
                select(AuthSession.revoked_at).where(AuthSession.id == session_id)
            ).first()
        return b"ok" if revoked_at is not None and revoked_at[0] is None else REVOKED

    return _cache().lookup(_cache_key(session_id), load) == b"ok"


def refresh(token: str) -> dict[str, Any]:
    """A new pair for a refresh token, which stops working."""
    claims = _decode(token, "refresh")
    session_id, presented = claims["sid"], claims["jti"]
    next_jti = uuid.uuid4().hex
    ttl = current_app.extensions["settings"].jwt_refresh_ttl
    now = datetime.now(UTC)
    with _db().session() as session:
        swapped = session.execute(
            update(AuthSession)
            .where(
                AuthSession.id == session_id,
                AuthSession.refresh_jti == presented,
                AuthSession.revoked_at.is_(None),
            )
            .values(refresh_jti=next_jti, expires_at=now + timedelta(seconds=ttl))
        ).rowcount
        user = session.scalars(
            select(User)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(AuthSession.id == session_id)
        ).one_or_none()
    if not swapped or user is None:
        raise unauthorized("the refresh token has been used or revoked")
    return token_pair(user, session_id, next_jti)


def revoke(session_id: str) -> None:
    with _db().session() as session:
        session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    _cache().revoke(_cache_key(session_id))


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

"""Logins on the wire: a password check opens a login (``common.accounts.logins``); its tokens
carry the login's id.

- access token: ``sub`` (user id), ``sid``, ``usr`` (username), ``adm`` (admin when issued:
  for the client to read; the service asks the account), 15 minutes;
- refresh token: ``sub``, ``sid``, and the ``jti`` the login expects next, 30 days.

A refresh token works once; a used one presented again ends the login. Logging out revokes the
login: its access and refresh tokens stop working at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import jwt
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException

from api.auth import LOGIN_SCOPES, Caller, unauthorized
from api.services import accounts, services, settings
from common.accounts import logins
from common.models import User

_BAD_TOKEN = (jwt.PyJWTError, JWTExtendedException, ValueError, TypeError, KeyError)


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
        "expires_in": settings().jwt_access_ttl,
    }


def open_session(user: User, client: str | None = None) -> dict[str, Any]:
    """A new login of ``user`` from ``client`` (its address), and its first pair."""
    session_id, refresh_jti = logins.do_open_login(accounts(), user.id, client)
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
    verified = services().verified_tokens
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
    """The caller an access token stands for, unless its login ended. Who the caller is
    (name, admin) is the account's now, never the token's claims: a demotion holds from the
    next request on."""
    claims = _decode(token, "access")
    state = logins.login_state(accounts(), claims["sid"])
    if state is None or state["user"] != int(claims["sub"]):
        raise unauthorized("the token has been revoked")
    return Caller(
        user_id=state["user"],
        username=state["username"],
        is_admin=state["admin"],
        scopes=LOGIN_SCOPES,
        session_id=claims["sid"],
    )


def refresh(token: str) -> dict[str, Any]:
    """A new pair for a refresh token, which stops working (``logins.do_refresh_login``)."""
    claims = _decode(token, "refresh")
    refreshed = logins.do_refresh_login(accounts(), claims["sid"], claims["jti"])
    if refreshed is None:
        raise unauthorized("the refresh token has been used or revoked")
    user, next_jti = refreshed
    return token_pair(user, claims["sid"], next_jti)


def revoke(session_id: str) -> None:
    logins.do_revoke_login(accounts(), session_id)

"""Who is calling (docs/API.md, "Authentication").

Every credential comes as ``Authorization: Bearer <token>``: a JWT access token issued by
``POST /api/v2/auth/token`` (``sessions``), or an API key ``upk_...`` (``keys``). A route says
what it needs with ``@guarded(scope)``; the caller is then ``g.caller``. v1 routes, when
``V1_ACCESS=open``, take no credentials and see ownerless files only (``g.caller`` is None).

Checking a JWT costs its signature and one Redis round trip (is its login session revoked?);
checking a key costs one Redis round trip (what does it stand for?). The database is asked only
on a cache miss (``cache``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from flask import Flask, g, request
from sqlalchemy import ColumnElement

from api import errors, services
from api.errors import ApiError
from common.accounts.credentials import (  # noqa: F401 (named here for the routes)
    ACCOUNT,
    FILES_READ,
    FILES_WRITE,
    LOGIN_SCOPES,
    MAX_TOKEN_LENGTH,
    REALM,
    bearer,
)
from common.accounts.keys import PREFIX as KEY_PREFIX
from common.files import queries
from common.settings import Settings

#: What an API key may be given.
KEY_SCOPES = (FILES_READ, FILES_WRITE)


@dataclass(frozen=True)
class Caller:
    user_id: int
    username: str
    is_admin: bool
    scopes: frozenset[str]
    session_id: str | None = None  # a JWT's login session
    key_id: int | None = None  # an API key


def unauthorized(problem: str | None = None) -> ApiError:
    """401 with RFC 6750's challenge; ``problem`` when a credential was sent and is bad."""
    if problem is None:
        return errors.UNAUTHORIZED(headers={"WWW-Authenticate": REALM})
    return errors.BAD_CREDENTIAL(
        problem,
        headers={
            "WWW-Authenticate": f'{REALM}, error="invalid_token", error_description="{problem}"'
        },
    )


def insufficient_scope(scope: str) -> ApiError:
    return errors.INSUFFICIENT_SCOPE(
        {"required_scope": scope},
        headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
    )


def forbidden() -> ApiError:
    return errors.FORBIDDEN()


def bearer_token() -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without the header, 401 when it is
    not of that form."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    if len(header) > MAX_TOKEN_LENGTH + 7:
        raise unauthorized("the token is too long")
    token = bearer(header)
    if token is None:
        raise unauthorized("expected 'Authorization: Bearer <token>'")
    return token


def authenticate() -> Caller:
    """The caller of this request, from its Authorization header; 401 otherwise."""
    cached = g.get("caller")
    if cached is not None:
        return cached
    token = bearer_token()
    if token is None:
        raise unauthorized()
    from api.auth import keys, sessions

    verify = keys.caller_for if token.startswith(KEY_PREFIX) else sessions.caller_for
    g.caller = verify(token)
    return g.caller


def guarded(scope: str | None, *, v1: bool = False):
    """The route needs a caller (with ``scope``, when given); a v1 route needs none when
    V1_ACCESS=open."""

    def decorate(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            if v1 and services.settings().v1_access == "open":
                g.caller = None
            else:
                caller = authenticate()
                if scope is not None and scope not in caller.scopes:
                    raise insufficient_scope(scope)
            return view(*args, **kwargs)

        return checked

    return decorate


def require_admin(who: Caller) -> None:
    """Actions on accounts are for an admin who logged in with a password: an API key acts on
    files only, whoever owns it (403 ``INSUFFICIENT_SCOPE`` naming ``account``)."""
    if not who.is_admin:
        raise forbidden()
    if ACCOUNT not in who.scopes:
        raise insufficient_scope(ACCOUNT)


def caller() -> Caller | None:
    """The caller ``@guarded`` established (None: open v1)."""
    return g.get("caller")


def visible_files(who: Caller | None) -> ColumnElement[bool]:
    """The files ``who`` may act on: their own (admins: all); open v1: the ownerless ones.
    Anything else is answered as missing."""
    if who is None:
        return queries.visible_to(None)
    return queries.visible_to(who.user_id, is_admin=who.is_admin)


def init_auth(app: Flask, settings: Settings) -> None:
    from datetime import timedelta

    from flask_jwt_extended import JWTManager

    app.config.update(
        JWT_SECRET_KEY=settings.resolved_jwt_secret_key(),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.jwt_access_ttl),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=settings.jwt_refresh_ttl),
        JWT_TOKEN_LOCATION=["headers"],
    )
    JWTManager(app)

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

from flask import Flask, current_app, g, request
from sqlalchemy import ColumnElement, or_, select, true

from api.errors import ApiError
from common.models import File, User, identity_key
from common.settings import Settings

REALM = 'Bearer realm="upload-pipeline"'
FILES_READ, FILES_WRITE = "files:read", "files:write"
#: What an API key may be given.
KEY_SCOPES = (FILES_READ, FILES_WRITE)
#: Managing one's keys and logins: a person who logged in with a password, never a key.
ACCOUNT = "account"
LOGIN_SCOPES = frozenset({FILES_READ, FILES_WRITE, ACCOUNT})
#: Longer Authorization values are refused before any parsing (a JWT here is ~400 bytes).
MAX_TOKEN_LENGTH = 4096
KEY_PREFIX = "upk_"


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
        return ApiError(
            401,
            "UNAUTHORIZED",
            "Требуется авторизация",
            headers={"WWW-Authenticate": REALM},
        )
    return ApiError(
        401,
        "UNAUTHORIZED",
        "Недействительные учетные данные",
        details=problem,
        headers={
            "WWW-Authenticate": f'{REALM}, error="invalid_token", error_description="{problem}"'
        },
    )


def insufficient_scope(scope: str) -> ApiError:
    return ApiError(
        403,
        "INSUFFICIENT_SCOPE",
        "Недостаточно прав для этого действия",
        details={"required_scope": scope},
        headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
    )


def forbidden() -> ApiError:
    return ApiError(403, "FORBIDDEN", "Доступ запрещен")


def bearer_token() -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without the header, 401 when it is
    not of that form."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    if len(header) > MAX_TOKEN_LENGTH + 7:
        raise unauthorized("the token is too long")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
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
            if v1 and current_app.extensions["settings"].v1_access == "open":
                g.caller = None
            else:
                caller = authenticate()
                if scope is not None and scope not in caller.scopes:
                    raise insufficient_scope(scope)
            return view(*args, **kwargs)

        return checked

    return decorate


def account_named(session, login: str) -> User | None:
    """The account a login names: the username spelt exactly so, else the one that compares
    equal (NFKC with case folding), else the email address. Accounts that migration 0003 kept
    apart (``alice``, ``ALICE``) each answer to their own spelling."""
    key = identity_key(login)
    users = session.scalars(
        select(User).where(
            or_(User.username == login, User.username_key == key, User.email_key == key)
        )
    ).all()
    for matches in (
        lambda u: u.username == login,
        lambda u: u.username_key == key,
        lambda u: u.email_key == key,
    ):
        found = [u for u in users if matches(u)]
        if found:
            return found[0]
    return None


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
        return File.owner_id.is_(None)
    if who.is_admin:
        return true()
    return File.owner_id == who.user_id


def init_auth(app: Flask, settings: Settings) -> None:
    from datetime import timedelta

    from flask_jwt_extended import JWTManager

    from api.auth.cache import AuthCache
    from api.auth.sessions import VerifiedTokens

    app.config.update(
        JWT_SECRET_KEY=settings.resolved_jwt_secret_key(),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.jwt_access_ttl),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=settings.jwt_refresh_ttl),
        JWT_TOKEN_LOCATION=["headers"],
    )
    JWTManager(app)
    app.extensions["auth_cache"] = AuthCache(settings.redis_url)
    app.extensions["verified_tokens"] = VerifiedTokens()
    app.extensions["api_key_touches"] = {}  # key digest -> when last_used_at was last written

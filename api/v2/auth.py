"""Logging in, refreshing and logging out (docs/API.md, "Authentication").

``?session=cookie`` (the page at /app): the refresh token is kept from scripts in an
``HttpOnly``, ``SameSite=Strict`` cookie that only the refresh route receives (``Secure`` over
https), and a refresh by that cookie must carry the ``X-CSRF-Token`` header equal to the
``upl_csrf`` cookie set beside it (double submit: a page of another origin can neither read the
cookie nor, by SameSite, have it sent).
"""

from __future__ import annotations

import hmac
import secrets

from flask import Blueprint, Response, jsonify, request

from api import errors
from api.auth import (
    ACCOUNT,
    REALM,
    authenticate,
    bearer_token,
    insufficient_scope,
    sessions,
    unauthorized,
)
from api.bodies import json_object, json_object_body
from api.errors import ApiError
from api.limits import client_key
from api.schemas import replies, spec_v2
from api.services import accounts, settings
from api.v2.schemas import Login, RefreshBody, TokenPair
from common.accounts import passwords, users

bp = Blueprint("v2_auth", __name__, url_prefix="/api/v2/auth")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def invalid_credentials() -> ApiError:
    return errors.INVALID_CREDENTIALS(headers={"WWW-Authenticate": REALM})


@bp.post("/token")
@json_object_body
@spec_v2.validate(
    json=Login, resp=replies({"HTTP_200": TokenPair}, 400, 401, 413, 415), tags=["auth"]
)
def log_in():
    """Exchange a username (or email) and password for an access and a refresh token."""
    body: Login = request.context.json
    with accounts().db.reading() as session:
        user = users.account_named(session, body.login)
    # An unknown user is checked against a dummy hash: the answer takes as long either way.
    if not passwords.verify(user.password_hash if user else None, body.password):
        raise invalid_credentials()
    if passwords.needs_rehash(user.password_hash):
        users.do_rehash_password(accounts(), user.id, body.password)
    pair = sessions.open_session(user, client_key())
    if request.args.get("session") == "cookie":
        return _in_cookie(pair)
    return jsonify(pair), 200, NO_STORE


@bp.post("/refresh")
@spec_v2.validate(resp=replies({"HTTP_200": TokenPair}, 400, 401, 403), tags=["auth"])
def refresh():
    """A new pair for a refresh token (in the Authorization header, the body's
    ``refresh_token``, or the page's cookie); the one presented stops working."""
    token = _refresh_token()
    if token is None:  # the cookie's
        return _in_cookie(sessions.refresh(_cookie_token()))
    return jsonify(sessions.refresh(token)), 200, NO_STORE


def _refresh_token() -> str | None:
    token = bearer_token()
    if token is not None:
        return token
    if request.content_length or request.is_json:
        try:
            body = RefreshBody.model_validate(json_object())
        except ValueError:
            raise errors.VALIDATION_ERROR.at("refresh_token", "a string") from None
        if body.refresh_token:
            return body.refresh_token
    if REFRESH_COOKIE in request.cookies:
        return None
    raise unauthorized()


REFRESH_COOKIE, CSRF_COOKIE, CSRF_HEADER = "upl_refresh", "upl_csrf", "X-CSRF-Token"


def _cookie_token() -> str:
    """The refresh cookie's token, once the request proves it comes from the page."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise errors.FORBIDDEN({"reason": f"{CSRF_HEADER} must repeat the {CSRF_COOKIE} cookie"})
    return request.cookies[REFRESH_COOKIE]


def _in_cookie(pair: dict) -> tuple[Response, int, dict]:
    """The pair answered with its refresh token in the cookie instead of the body."""
    reply = jsonify(pair | {"refresh_token": None})
    secure = request.is_secure
    reply.set_cookie(
        REFRESH_COOKIE,
        pair["refresh_token"],
        max_age=settings().jwt_refresh_ttl,
        path="/api/v2/auth/refresh",
        secure=secure,
        httponly=True,
        samesite="Strict",
    )
    reply.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(32), path="/", secure=secure, samesite="Strict"
    )
    return reply, 200, NO_STORE


def _forget_cookies(reply: Response) -> Response:
    reply.delete_cookie(REFRESH_COOKIE, path="/api/v2/auth/refresh", samesite="Strict")
    reply.delete_cookie(CSRF_COOKIE, path="/", samesite="Strict")
    return reply


@bp.delete("/token")
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403), tags=["auth"])
def log_out():
    """Revoke the presented access token and its refresh token."""
    caller = authenticate()
    if ACCOUNT not in caller.scopes or caller.session_id is None:
        raise insufficient_scope(ACCOUNT)
    sessions.revoke(caller.session_id)
    return _forget_cookies(Response(status=204))

"""Logging in, refreshing and logging out (docs/API.md, "Authentication")."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import update

from api.auth import (
    ACCOUNT,
    REALM,
    account_named,
    authenticate,
    bearer_token,
    insufficient_scope,
    passwords,
    sessions,
    unauthorized,
)
from api.bodies import json_object, json_object_body
from api.errors import ApiError
from api.limits import client_key
from api.schemas import replies, spec_v2
from api.v2.schemas import Login, RefreshBody, TokenPair
from common.models import User

bp = Blueprint("v2_auth", __name__, url_prefix="/api/v2/auth")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def invalid_credentials() -> ApiError:
    return ApiError(
        401,
        "INVALID_CREDENTIALS",
        "Неверное имя пользователя или пароль",
        headers={"WWW-Authenticate": REALM},
    )


@bp.post("/token")
@json_object_body
@spec_v2.validate(
    json=Login, resp=replies({"HTTP_200": TokenPair}, 400, 401, 413, 415), tags=["auth"]
)
def log_in():
    """Exchange a username (or email) and password for an access and a refresh token."""
    body: Login = request.context.json
    db = current_app.extensions["pipeline"].db
    with db.reading() as session:
        user = account_named(session, body.login)
    # An unknown user is checked against a dummy hash: the answer takes as long either way.
    if not passwords.verify(user.password_hash if user else None, body.password):
        raise invalid_credentials()
    if passwords.needs_rehash(user.password_hash):
        with db.session() as session:
            session.execute(
                update(User)
                .where(User.id == user.id)
                .values(password_hash=passwords.hash_password(body.password))
            )
    return jsonify(sessions.open_session(user, client_key())), 200, NO_STORE


@bp.post("/refresh")
@spec_v2.validate(resp=replies({"HTTP_200": TokenPair}, 400, 401), tags=["auth"])
def refresh():
    """A new pair for a refresh token (in the Authorization header, or the body's
    ``refresh_token``); the one presented stops working."""
    token = _refresh_token()
    return jsonify(sessions.refresh(token)), 200, NO_STORE


def _refresh_token() -> str:
    token = bearer_token()
    if token is not None:
        return token
    if request.content_length or request.is_json:
        try:
            body = RefreshBody.model_validate(json_object())
        except ValueError:
            raise ApiError(
                400, "VALIDATION_ERROR", "Неверные данные", details={"refresh_token": "a string"}
            ) from None
        if body.refresh_token:
            return body.refresh_token
    raise unauthorized()


@bp.delete("/token")
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403), tags=["auth"])
def log_out():
    """Revoke the presented access token and its refresh token."""
    caller = authenticate()
    if ACCOUNT not in caller.scopes or caller.session_id is None:
        raise insufficient_scope(ACCOUNT)
    sessions.revoke(caller.session_id)
    return "", 204

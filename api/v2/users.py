"""Accounts: registration and the caller's own account (docs/API.md, "Accounts")."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import ValidationError

from api import errors
from api.auth import ACCOUNT, REALM, authenticate, guarded, require_admin, unauthorized
from api.bodies import json_object, json_object_body
from api.schemas import replies, spec_v2
from api.services import accounts, pipeline, settings
from api.v1.users import user_taken
from api.v2.schemas import Me, PasswordConfirmation, Registration, UserV2
from api.v2.usage import totals_object
from common.accounts import passwords, users
from common.fileinfo import iso_z
from common.files import usage
from common.models import User

bp = Blueprint("v2_users", __name__, url_prefix="/api/v2")


def user_object(user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "is_admin": user.is_admin,
        "created_at": iso_z(user.created_at),
    }


def _registration_allowed() -> None:
    """REGISTRATION=closed: only an admin creates accounts (the CLI needs no route)."""
    if settings().registration == "closed":
        require_admin(authenticate())


@bp.post("/users")
@json_object_body
@spec_v2.validate(
    json=Registration,
    resp=replies({"HTTP_201": UserV2}, 400, 401, 403, 409, 413, 415),
    tags=["accounts"],
)
def register():
    """Create an account with a password (REGISTRATION=open, or an admin's token)."""
    _registration_allowed()
    body: Registration = request.context.json
    try:
        user = users.do_create_user(accounts(), body.username, body.email, password=body.password)
    except users.UserExists as exc:
        raise user_taken(exc.field) from None
    return jsonify(user_object(user)), 201


@bp.get("/me")
@guarded(None)
@spec_v2.validate(resp=replies({"HTTP_200": Me}, 401), tags=["accounts"])
def me():
    """The caller's account and usage totals (live files by status, bytes stored)."""
    caller = authenticate()
    with accounts().db.reading() as session:
        user = session.get(User, caller.user_id)
        totals = usage.totals_of(session, caller.user_id)
    if user is None:  # the account is gone; its tokens die with it
        raise unauthorized("the account no longer exists")
    limit = user.quota_mb if user.quota_mb is not None else settings().user_quota_mb
    quota = {"used_bytes": user.used_bytes, "quota_bytes": limit * 1024 * 1024 or None}
    body = user_object(user) | {"usage": totals_object(totals), "quota": quota}
    return jsonify(body)


@bp.delete("/me")
@guarded(ACCOUNT)
@spec_v2.validate(resp=replies({"HTTP_204": None}, 400, 401, 403, 413, 415), tags=["accounts"])
def delete_me():
    """Delete the caller's account: body ``{"password"}``, the account's password again, as
    a confirmation. Its files, its logins and its keys go with it."""
    caller = authenticate()
    try:  # spectree reads no body of a DELETE: validated here
        body = PasswordConfirmation.model_validate(json_object())
    except ValidationError as exc:
        raise errors.VALIDATION_ERROR.at("password", exc.errors()[0]["msg"]) from None
    with accounts().db.reading() as session:
        user = session.get(User, caller.user_id)
    if user is None or not passwords.verify(user.password_hash, body.password):
        raise errors.INVALID_CREDENTIALS(headers={"WWW-Authenticate": REALM})
    users.do_delete_account(accounts(), pipeline(), caller.user_id)
    return "", 204


@bp.delete("/users/<name>")
@guarded(None)
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403, 404), tags=["accounts"])
def delete_user(name: str):
    """Admins: delete an account, as ``DELETE /api/v2/me`` does."""
    require_admin(authenticate())
    with accounts().db.reading() as session:
        user = users.account_named(session, name)
    if (
        user is None
        or user.deleted_at is not None
        or users.do_delete_account(accounts(), pipeline(), user.id) is None
    ):
        raise errors.USER_NOT_FOUND()
    return "", 204

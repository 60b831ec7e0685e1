"""Accounts: registration and the caller's own account (docs/API.md, "Accounts")."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.auth import (
    ACCOUNT,
    REALM,
    account_named,
    authenticate,
    guarded,
    passwords,
    require_admin,
    unauthorized,
)
from api.auth.accounts import delete_account
from api.bodies import json_object, json_object_body
from api.errors import ApiError
from api.schemas import Status, replies, spec_v2
from api.v1.users import user_exists, user_taken
from api.v2.schemas import Me, PasswordConfirmation, Registration, UserV2
from common.fileinfo import iso_z
from common.models import File, FileStatus, User

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
    if current_app.extensions["settings"].registration == "closed":
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
    db = current_app.extensions["pipeline"].db
    taken = user_exists(db, body.username, body.email)
    if taken is not None:  # before the password is hashed: a 409 costs no argon2 work
        raise taken
    user = User(
        username=body.username,
        email=body.email,
        password_hash=passwords.hash_password(body.password),
    )
    try:
        with db.session() as session:
            session.add(user)
    except IntegrityError:
        raise user_exists(db, body.username, body.email) or user_taken("username") from None
    return jsonify(user_object(user)), 201


@bp.get("/me")
@guarded(None)
@spec_v2.validate(resp=replies({"HTTP_200": Me}, 401), tags=["accounts"])
def me():
    """The caller's account and usage totals (live files by status, bytes stored)."""
    caller = authenticate()
    with current_app.extensions["pipeline"].db.reading() as session:
        user = session.get(User, caller.user_id)
        counts = session.execute(
            select(File.status, func.count(), func.coalesce(func.sum(File.size), 0))
            .where(File.owner_id == caller.user_id, File.status != FileStatus.DELETED)
            .group_by(File.status)
        ).all()
    if user is None:  # the account is gone; its tokens die with it
        raise unauthorized("the account no longer exists")
    by_status: dict[str, int] = {s: 0 for s in Status.__args__}
    for status, count, _size in counts:
        by_status[status.value] = count
    stored = sum(size for status, _count, size in counts if status == FileStatus.STORED)
    body = user_object(user) | {
        "usage": {
            "files": sum(count for _status, count, _size in counts),
            "bytes_stored": int(stored),
            "by_status": by_status,
        }
    }
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
        raise ApiError(
            400, "VALIDATION_ERROR", "Неверные данные", details={"password": exc.errors()[0]["msg"]}
        ) from None
    with current_app.extensions["pipeline"].db.reading() as session:
        user = session.get(User, caller.user_id)
    if user is None or not passwords.verify(user.password_hash, body.password):
        raise ApiError(
            401,
            "INVALID_CREDENTIALS",
            "Неверное имя пользователя или пароль",
            headers={"WWW-Authenticate": REALM},
        )
    delete_account(caller.user_id)
    return "", 204


@bp.delete("/users/<name>")
@guarded(None)
@spec_v2.validate(resp=replies({"HTTP_204": None}, 401, 403, 404), tags=["accounts"])
def delete_user(name: str):
    """Admins: delete an account, as ``DELETE /api/v2/me`` does."""
    require_admin(authenticate())
    with current_app.extensions["pipeline"].db.reading() as session:
        user = account_named(session, name)
    if user is None or user.deleted_at is not None or delete_account(user.id) is None:
        raise ApiError(404, "USER_NOT_FOUND", "Пользователь не найден")
    return "", 204

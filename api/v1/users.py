"""User routes: list and create (docs/API.md). Unique constraints in the database decide 409s."""

from __future__ import annotations

import functools
import json

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest

from api.errors import ApiError
from api.schemas import UserIn, UserList, UserOut, replies, spec
from common.models import User, identity_key

bp = Blueprint("users", __name__)

MAX_BODY = 64 * 1024


def user_object(user: User) -> dict:
    return {"id": user.id, "username": user.username, "email": user.email}


@bp.get("/users")
@spec.validate(resp=replies({"HTTP_200": UserList}), tags=["users"])
def list_users():
    """All users, ordered by id."""
    with current_app.extensions["pipeline"].db.session() as session:
        users = session.scalars(select(User).order_by(User.id)).all()
    return jsonify([user_object(u) for u in users])


def json_object_body(view):
    """Refuse bodies that are not a JSON object (415/400/413) before schema validation."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        _json_object()
        return view(*args, **kwargs)

    return checked


@bp.post("/users")
@json_object_body
@spec.validate(json=UserIn, resp=replies({"HTTP_201": UserOut}, 400, 409, 413, 415), tags=["users"])
def create_user():
    """Create a user; username and email are unique."""
    payload: UserIn = request.context.json
    user = User(username=payload.username, email=payload.email)
    db = current_app.extensions["pipeline"].db
    try:
        with db.session() as session:
            session.add(user)
    except IntegrityError:
        raise ApiError(
            409,
            "USER_EXISTS",
            "Пользователь уже существует",
            details={"field": _taken_field(db, payload)},
        ) from None
    return jsonify(user_object(user)), 201


def _json_object() -> dict:
    """The body as a JSON object, parsed once: Flask caches it for the schema validation."""
    if not request.is_json:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "Ожидается тело в формате application/json")
    request.max_content_length = MAX_BODY
    try:
        data = request.get_json()
    except BadRequest as exc:  # not JSON, or not UTF-8
        problem = _json_problem(exc.__cause__ or exc.__context__)
        raise ApiError(400, "INVALID_JSON", "Некорректный JSON", details=problem) from None
    except RecursionError:
        raise ApiError(
            400, "INVALID_JSON", "Некорректный JSON", details="too deeply nested"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            400, "INVALID_JSON", "Ожидается JSON-объект", details="body must be an object"
        )
    return data


def _json_problem(cause: BaseException | None) -> str:
    """What was wrong with a body, in the API's words (never the decoder's own text)."""
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not UTF-8"
    if isinstance(cause, json.JSONDecodeError):
        return f"not valid JSON at line {cause.lineno}, column {cause.colno}"
    return "not valid JSON"


def _taken_field(db, payload: UserIn) -> str:
    with db.session() as session:
        taken = select(User.id).where(User.username_key == identity_key(payload.username))
        if session.scalar(taken):
            return "username"
    return "email"

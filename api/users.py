"""User routes: list and create (SPEC §4). Unique constraints in the database decide 409s."""

from __future__ import annotations

import json
from typing import Annotated

from flask import Blueprint, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError
from common.models import User

bp = Blueprint("users", __name__)

MAX_BODY = 64 * 1024

Username = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, pattern=r"^[\w.-]{1,64}$")
]


class UserIn(BaseModel):
    """The body of ``POST /users``."""

    model_config = ConfigDict(strict=True)

    username: Username
    email: Annotated[EmailStr, Field(max_length=254)]


def user_object(user: User) -> dict:
    return {"id": user.id, "username": user.username, "email": user.email}


@bp.get("/users")
def list_users():
    with current_app.extensions["pipeline"].db.session() as session:
        users = session.scalars(select(User).order_by(User.id)).all()
    return jsonify([user_object(u) for u in users])


@bp.post("/users")
def create_user():
    data = _json_object()
    try:
        payload = UserIn.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "VALIDATION_ERROR", "Неверные данные", details=_fields(exc)) from None
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
    if not request.is_json:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "Ожидается тело в формате application/json")
    request.max_content_length = MAX_BODY
    raw = request.get_data(cache=False)
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(
            400, "INVALID_JSON", "Некорректный JSON", details="тело не в UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", "Некорректный JSON", details=str(exc)) from None
    except RecursionError:
        raise ApiError(
            400, "INVALID_JSON", "Некорректный JSON", details="too deeply nested"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            400, "INVALID_JSON", "Ожидается JSON-объект", details="body must be an object"
        )
    return data


def _fields(exc: ValidationError) -> dict[str, str]:
    """``{"field": "what is wrong"}`` for each invalid or missing field."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        name = ".".join(str(p) for p in error["loc"]) or "body"
        fields.setdefault(name, error["msg"])
    return fields


def _taken_field(db, payload: UserIn) -> str:
    with db.session() as session:
        if session.scalar(select(User.id).where(User.username == payload.username)):
            return "username"
    return "email"

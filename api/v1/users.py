"""User routes: list and create (docs/API.md, v1). Unique constraints in the database decide 409s.

With ``V1_ACCESS=open`` they act on open v1's own users (``open_users``: names and addresses
anyone may list and add), never on accounts. With ``V1_ACCESS=token`` a caller is needed:
``GET /users`` lists every account for an admin and only the caller for anyone else;
``POST /users`` is for admins (people register through ``POST /api/v2/users``).
"""

from __future__ import annotations

import functools

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.auth import ACCOUNT, caller, guarded, require_admin
from api.bodies import json_object_body
from api.errors import ApiError
from api.schemas import UserIn, UserList, UserOut, replies, spec
from common.models import OpenUser, User, identity_key
from common.usernames import skeleton

bp = Blueprint("users", __name__)


def user_object(user: User | OpenUser) -> dict:
    return {"id": user.id, "username": user.username, "email": user.email}


@bp.get("/users")
@guarded(None, v1=True)
@spec.validate(resp=replies({"HTTP_200": UserList}), tags=["users"])
def list_users():
    """All users, ordered by id."""
    who = caller()
    if who is None:  # open v1: its own users, never the accounts
        with current_app.extensions["pipeline"].db.reading() as session:
            users = session.scalars(select(OpenUser).order_by(OpenUser.id)).all()
        return jsonify([user_object(u) for u in users])
    query = select(User).where(User.deleted_at.is_(None)).order_by(User.id)
    if who is not None and not (who.is_admin and ACCOUNT in who.scopes):
        query = query.where(User.id == who.user_id)
    with current_app.extensions["pipeline"].db.session() as session:
        users = session.scalars(query).all()
    return jsonify([user_object(u) for u in users])


def admin_only(view):
    """A route for admins when there is a caller (V1_ACCESS=token); 403 for anyone else."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        who = caller()
        if who is not None:
            require_admin(who)
        return view(*args, **kwargs)

    return checked


@bp.post("/users")
@guarded(None, v1=True)
@admin_only
@json_object_body
@spec.validate(json=UserIn, resp=replies({"HTTP_201": UserOut}, 400, 409, 413, 415), tags=["users"])
def create_user():
    """Create a user; username and email are unique."""
    payload: UserIn = request.context.json
    # Open v1 adds to its own users: it can neither see nor take an account's name.
    model = OpenUser if caller() is None else User
    user = model(username=payload.username, email=payload.email)
    db = current_app.extensions["pipeline"].db
    try:
        with db.session() as session:
            session.add(user)
    except IntegrityError:
        raise user_exists(db, payload.username, model=model) from None
    return jsonify(user_object(user)), 201


def user_exists(
    db, username: str, email: str | None = None, *, model: type = User
) -> ApiError | None:
    """409 naming which unique key a user (an account, or an open v1 user) already holds;
    None when neither is taken."""
    with db.reading() as session:
        name_taken = session.scalar(
            select(model.id).where(model.username_key == identity_key(username))
        ) or (model is User and lookalike_taken(session, username))
        email_taken = email is not None and session.scalar(
            select(model.id).where(model.email_key == identity_key(email))
        )
    if name_taken:
        return user_taken("username")
    if email_taken:
        return user_taken("email")
    return None if email is not None else user_taken("email")


def lookalike_taken(session, username: str) -> bool:
    """Whether an account's name looks like ``username`` (the same confusable skeleton)."""
    return (
        session.scalar(select(User.id).where(User.username_skeleton == skeleton(username)).limit(1))
        is not None
    )


def user_taken(field: str) -> ApiError:
    return ApiError(409, "USER_EXISTS", "Пользователь уже существует", details={"field": field})

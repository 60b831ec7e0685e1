"""User routes: list and create (docs/API.md, v1). Unique constraints in the database decide 409s.

With ``V1_ACCESS=open`` they act on open v1's own users (``open_users``: names and addresses
anyone may list and add), never on accounts. With ``V1_ACCESS=token`` a caller is needed:
``GET /users`` lists every account for an admin and only the caller for anyone else;
``POST /users`` is for admins (people register through ``POST /api/v2/users``).
"""

from __future__ import annotations

import functools

from flask import Blueprint, jsonify, request

from api import errors
from api.auth import ACCOUNT, caller, guarded, require_admin
from api.bodies import json_object_body
from api.errors import ApiError
from api.schemas import UserIn, UserList, UserOut, replies, spec
from api.services import accounts
from common.accounts import users
from common.models import OpenUser, User

bp = Blueprint("users", __name__)


def user_object(user: User | OpenUser) -> dict:
    return {"id": user.id, "username": user.username, "email": user.email}


@bp.get("/users")
@guarded(None, v1=True)
@spec.validate(resp=replies({"HTTP_200": UserList}), tags=["users"])
def list_users():
    """All users, ordered by id."""
    who = caller()
    with accounts().db.reading() as session:
        if who is None:  # open v1: its own users, never the accounts
            found = users.open_users(session)
        elif who.is_admin and ACCOUNT in who.scopes:
            found = users.listed(session)
        else:
            found = users.listed(session, only=who.user_id)
    return jsonify([user_object(u) for u in found])


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
    try:
        user = users.do_create_user(accounts(), payload.username, payload.email, model=model)
    except users.UserExists as exc:
        raise user_taken(exc.field) from None
    return jsonify(user_object(user)), 201


def user_taken(field: str) -> ApiError:
    return errors.USER_EXISTS.at("field", field)

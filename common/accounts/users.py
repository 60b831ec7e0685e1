"""Accounts, and open v1's own users: creating, finding, promoting, changing the password of
and deleting them. Each change is one named ``do_*`` function, used by the API's routes and the
operator's commands alike. Uniqueness is decided by the database (``username_key``,
``email_key``); a name that looks like an account's (``usernames.skeleton``) is taken too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.accounts import Accounts, keys, logins, passwords
from common.accounts.usernames import skeleton
from common.files import queries
from common.models import OpenUser, User, identity_key

if TYPE_CHECKING:
    from common.files.pipeline import Pipeline

#: Files deleted in one transaction when an account goes (as a bulk delete's most).
DELETE_BATCH = 1000


class UserExists(Exception):
    """The username or the email address (``field``) belongs to someone already."""

    def __init__(self, field: str) -> None:
        super().__init__(f"that {field} is taken")
        self.field = field


def account_named(session: Session, login: str) -> User | None:
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


def user_named(session: Session, name: str) -> User | None:
    """The account spelt exactly ``name``, else the one whose name compares equal to it (an
    operator never changes ``ALICE`` by naming ``alice``)."""
    user = session.scalars(select(User).where(User.username == name)).first()
    if user is None:
        user = session.scalars(select(User).where(User.username_key == identity_key(name))).first()
    return user


def lookalike_taken(session: Session, username: str) -> bool:
    """Whether an account's name looks like ``username`` (the same confusable skeleton)."""
    query = select(User.id).where(User.username_skeleton == skeleton(username)).limit(1)
    return session.scalar(query) is not None


def taken(accounts: Accounts, username: str, email: str, *, model: type = User) -> str | None:
    """Which of ``username`` and ``email`` an account (or, with ``model=OpenUser``, an open v1
    user) already holds: ``"username"``, ``"email"``, or None."""
    with accounts.db.reading() as session:
        name_taken = session.scalar(
            select(model.id).where(model.username_key == identity_key(username))
        ) or (model is User and lookalike_taken(session, username))
        if name_taken:
            return "username"
        if session.scalar(select(model.id).where(model.email_key == identity_key(email))):
            return "email"
    return None


def do_create_user(
    accounts: Accounts,
    username: str,
    email: str,
    *,
    password: str | None = None,
    is_admin: bool = False,
    model: type = User,
) -> User:
    """Create an account (``model=OpenUser``: an open v1 user, with neither password nor
    rights). ``UserExists`` naming what is taken: checked before the password is hashed (a
    conflict costs no argon2 work), and decided by the database's unique keys."""
    field = taken(accounts, username, email, model=model)
    if field is not None:
        raise UserExists(field)
    if model is OpenUser:
        user = OpenUser(username=username, email=email)
    else:
        password_hash = passwords.hash_password(password) if password else None
        user = User(username=username, email=email, is_admin=is_admin, password_hash=password_hash)
    try:
        with accounts.db.session() as session:
            session.add(user)
    except IntegrityError:  # created meanwhile by another request
        raise UserExists(taken(accounts, username, email, model=model) or "username") from None
    return user


def listed(session: Session, only: int | None = None) -> list[User]:
    """Live accounts by id (``only``: that one alone)."""
    query = select(User).where(User.deleted_at.is_(None)).order_by(User.id)
    if only is not None:
        query = query.where(User.id == only)
    return list(session.scalars(query))


def open_users(session: Session) -> list[OpenUser]:
    """Open v1's own users, by id."""
    return list(session.scalars(select(OpenUser).order_by(OpenUser.id)))


def do_set_password(
    accounts: Accounts, user_id: int, password: str, *, revoke_keys: bool = False
) -> dict[str, int]:
    """Set (or replace) a password: the account's logins end (and with ``revoke_keys`` its
    API keys, for a password that was stolen). What was ended."""
    password_hash = passwords.hash_password(password)
    with accounts.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))
    report = {"sessions_revoked": logins.do_revoke_all_logins(accounts, user_id)}
    if revoke_keys:
        report["keys_revoked"] = keys.do_revoke_all_keys(accounts, user_id)
    return report


def do_rehash_password(accounts: Accounts, user_id: int, password: str) -> None:
    """Store ``password`` (just verified) hashed with today's parameters."""
    password_hash = passwords.hash_password(password)
    with accounts.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


def do_set_admin(accounts: Accounts, user_id: int, is_admin: bool) -> None:
    """Give or take admin rights: every login and key of the account acts with the new rights
    from its next request."""
    with accounts.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(is_admin=is_admin))
    account_changed(accounts, user_id)


def do_set_quota(accounts: Accounts, user_id: int, quota_mb: int | None) -> None:
    """Give an account a quota of its own in MiB (0: none), or None: USER_QUOTA_MB's. Files
    it has are kept; only new uploads are held to it."""
    with accounts.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(quota_mb=quota_mb))


def account_changed(accounts: Accounts, user_id: int) -> None:
    """The account's name or rights changed (committed): every credential it has answers
    from the database on its next use."""
    logins.logins_changed(accounts, user_id)
    keys.keys_changed(accounts, user_id)


def do_delete_account(
    accounts: Accounts, pipeline: Pipeline, user_id: int
) -> dict[str, Any] | None:
    """Delete an account (docs/API.md, "Deleting an account"): what was ended, or None when
    there is no such account.

    Its live files are deleted through the pipeline (rows marked, objects removed by the
    workers, as a bulk delete does), its logins and API keys end at once, and its row stays as
    a tombstone: ``deleted_at`` set, name and address erased (so both are free again), the
    deleted files still naming it. Files never become ownerless: the foreign key refuses to
    remove a user who has any. Running it again finishes what a failure may have left.
    """
    with accounts.db.session() as session:
        if session.get(User, user_id) is None:
            return None
        session.execute(
            update(User)
            .where(User.id == user_id, User.deleted_at.is_(None))
            .values(
                deleted_at=datetime.now(UTC),
                is_admin=False,
                password_hash=None,
                username=f"#deleted-{user_id}",
                email=f"deleted-{user_id}@invalid",
                username_key=f"#deleted-{user_id}",
                username_skeleton=None,
                email_key=f"#deleted-{user_id}",
            )
        )
    report = {
        "sessions_revoked": logins.do_revoke_all_logins(accounts, user_id),
        "keys_revoked": keys.do_revoke_all_keys(accounts, user_id),
        "files_deleted": 0,
    }
    while True:
        with accounts.db.reading() as session:
            live = queries.live_ids_of(session, user_id, DELETE_BATCH)
        if not live:
            return report
        report["files_deleted"] += len(pipeline.delete_many(live))

"""Operator commands: ``flask --app api stats | requeue-failed | reconcile | create-bucket``,
``users create | set-password | make-admin | list`` and ``keys list | revoke``."""

from __future__ import annotations

import json
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.auth import keys as api_keys
from api.auth import passwords, sessions
from api.schemas import UserIn
from api.v1.users import lookalike_taken
from common.models import ApiKey, File, FileStatus, OutboxEntry, User, identity_key
from common.pipeline import Pipeline
from common.reconcile import reconcile as reconcile_once


def _pipeline() -> Pipeline:
    return current_app.extensions["pipeline"]


@click.command("stats")
@with_appcontext
def stats() -> None:
    """Files by status and outstanding outbox entries, as JSON."""
    with _pipeline().db.session() as session:
        files = dict(session.execute(select(File.status, func.count()).group_by(File.status)).all())
        outbox = dict(
            session.execute(select(OutboxEntry.kind, func.count()).group_by(OutboxEntry.kind)).all()
        )
    report = {
        "files": {status.value: files.get(status, 0) for status in FileStatus},
        "outbox": {kind.value: count for kind, count in outbox.items()},
    }
    click.echo(json.dumps(report, ensure_ascii=False))


@click.command("requeue-failed")
@with_appcontext
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="every failed file")
def requeue_failed(names: tuple[str, ...], everything: bool) -> None:
    """Put failed files back in the pipeline (their bytes are still staged)."""
    if not names and not everything:
        raise click.UsageError("name the files, or pass --all")
    pipeline = _pipeline()
    query = select(File.id, File.name).where(File.status == FileStatus.FAILED)
    if names:
        query = query.where(File.name.in_(names))
    with pipeline.db.session() as session:
        failed = session.execute(query).all()
    requeued = [name for file_id, name in failed if pipeline.requeue_failed(file_id)]
    click.echo(json.dumps({"requeued": requeued}))


@click.command("reconcile")
@with_appcontext
def reconcile() -> None:
    """Run the reconciler once (what beat runs every RECONCILE_INTERVAL)."""
    click.echo(json.dumps(vars(reconcile_once(_pipeline()))))


@click.command("create-bucket")
@with_appcontext
def create_bucket() -> None:
    """Create S3_BUCKET if it does not exist (STORAGE_BACKEND=s3)."""
    storage = _pipeline().storage
    if storage.bucket is None:
        raise click.ClickException("STORAGE_BACKEND is not s3: there is no bucket to create")
    storage.ensure_bucket()
    click.echo(json.dumps({"bucket": storage.bucket}))


users = AppGroup("users", help="Accounts: create, set a password, make an admin, list.")
keys_group = AppGroup("keys", help="API keys: list, revoke.")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not passwords.MIN_LENGTH <= len(password) <= passwords.MAX_LENGTH:
        raise click.ClickException(
            f"a password has {passwords.MIN_LENGTH} to {passwords.MAX_LENGTH} characters"
        )
    return password


def _user(session, name: str) -> User:
    """The user spelt exactly ``name``; else the one whose name compares equal to it.

    Accounts that migration 0003 kept apart (``alice`` and ``ALICE``) each answer to their
    own spelling: the operator never changes one of them by naming the other.
    """
    user = session.scalars(select(User).where(User.username == name)).first()
    if user is None:
        user = session.scalars(select(User).where(User.username_key == identity_key(name))).first()
    if user is None:
        raise click.ClickException(f"no user {name!r}")
    return user


def _described(user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "is_admin": user.is_admin,
        "has_password": user.password_hash is not None,
    }


@users.command("create")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--admin", is_flag=True, help="may act on every file and account")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--no-password", is_flag=True, help="no password yet (set-password later)")
def create_user(username: str, email: str, admin: bool, password_stdin: bool, no_password: bool):
    """Create a user (REGISTRATION=closed needs no route for it); prompts for a password."""
    try:
        checked = UserIn.model_validate({"username": username, "email": email})
    except ValueError as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    with _pipeline().db.reading() as session:
        if lookalike_taken(session, checked.username):
            raise click.ClickException("that username looks like an existing one")
    password = None if no_password else _read_password(password_stdin)
    user = User(
        username=checked.username,
        email=checked.email,
        is_admin=admin,
        password_hash=passwords.hash_password(password) if password else None,
    )
    try:
        with _pipeline().db.session() as session:
            session.add(user)
    except IntegrityError:
        raise click.ClickException("that username or email is taken") from None
    click.echo(json.dumps(_described(user), ensure_ascii=False))


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--revoke-keys", is_flag=True, help="delete the user's API keys too")
def set_password(username: str, password_stdin: bool, revoke_keys: bool):
    """Set (or replace) a user's password; the user's logins are ended (and with
    --revoke-keys their API keys, for a password that was stolen)."""
    password = _read_password(password_stdin)
    with _pipeline().db.session() as session:
        user = _user(session, username)
        user.password_hash = passwords.hash_password(password)
        user_id = user.id
    ended = sessions.revoke_all(user_id)
    report = {"username": username, "sessions_revoked": ended}
    if revoke_keys:
        report["keys_revoked"] = api_keys.revoke_all(user_id)
    click.echo(json.dumps(report, ensure_ascii=False))


@users.command("make-admin")
@click.argument("username")
@click.option("--revoke", is_flag=True, help="take admin rights away instead")
def make_admin(username: str, revoke: bool):
    """Give a user admin rights, or take them away: every token and key of theirs acts
    with the new rights from its next request."""
    with _pipeline().db.session() as session:
        user = _user(session, username)
        user.is_admin = not revoke
        described = _described(user)
    sessions.account_changed(described["id"])
    click.echo(json.dumps(described, ensure_ascii=False))


@users.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def delete_user(username: str, yes: bool):
    """Delete an account: its files (through the pipeline), its logins and its API keys."""
    from api.auth.accounts import delete_account

    with _pipeline().db.reading() as session:
        user = _user(session, username)
    if user.deleted_at is not None:
        raise click.ClickException(f"no user {username!r}")
    if not yes:
        click.confirm(f"Delete {user.username!r} and all their files?", abort=True)
    report = delete_account(user.id)
    click.echo(json.dumps({"username": user.username} | report, ensure_ascii=False))


@users.command("list")
def list_users():
    """Every user, as JSON lines."""
    with _pipeline().db.session() as session:
        for user in session.scalars(
            select(User).where(User.deleted_at.is_(None)).order_by(User.id)
        ):
            click.echo(json.dumps(_described(user), ensure_ascii=False))


@keys_group.command("list")
@click.argument("username")
def list_keys(username: str):
    """A user's API keys (never the keys themselves), as JSON lines."""
    with _pipeline().db.session() as session:
        user_id = _user(session, username).id
        rows = session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id))
        for key in rows:
            click.echo(
                json.dumps(
                    {"id": key.id, "name": key.name, "prefix": key.prefix, "scopes": key.scopes}
                )
            )


@keys_group.command("revoke")
@click.argument("key_id", type=int)
def revoke_key(key_id: int):
    """Revoke an API key by id: refused from the next request on."""
    if not api_keys.revoke(key_id, None):
        raise click.ClickException(f"no API key {key_id}")
    click.echo(json.dumps({"revoked": key_id}))


def init_cli(app: Flask) -> None:
    for command in (stats, requeue_failed, reconcile, create_bucket, users, keys_group):
        app.cli.add_command(command)

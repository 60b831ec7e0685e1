"""Operator commands: ``flask --app api stats | requeue-failed | reconcile | usage-check |
create-bucket``,
``users create | set-password | make-admin | list`` and ``keys list | revoke``."""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from api.schemas import UserIn
from api.services import accounts
from api.services import pipeline as _pipeline
from common.accounts import keys, passwords
from common.accounts import users as accounts_users
from common.files import queries, usage
from common.files.reconcile import reconcile as reconcile_once
from common.models import User


@click.command("stats")
@with_appcontext
def stats() -> None:
    """Files by status and outstanding outbox entries, as JSON."""
    with _pipeline().db.reading() as session:
        report = queries.totals(session)
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
    with pipeline.db.reading() as session:
        failed = queries.failed_named(session, names)
    requeued = [name for file_id, name in failed if pipeline.requeue_failed(file_id)]
    click.echo(json.dumps({"requeued": requeued}))


@click.command("reconcile")
@with_appcontext
def reconcile() -> None:
    """Run the reconciler once (what beat runs every RECONCILE_INTERVAL)."""
    click.echo(json.dumps(vars(reconcile_once(_pipeline()))))


@click.command("usage-check")
@with_appcontext
def usage_check() -> None:
    """Recompute every account's totals from its files and report where the running counters
    differ (there should be nowhere); exit status 1 when they do."""
    with _pipeline().db.reading() as session:
        found = usage.drift(session)
    click.echo(json.dumps({"drift": found}))
    if found:
        raise SystemExit(1)


@click.command("create-bucket")
@with_appcontext
def create_bucket() -> None:
    """Create S3_BUCKET if it does not exist (STORAGE_BACKEND=s3) and set its rules for direct
    uploads: incomplete ones aborted a day after UPLOAD_TTL, parts PUT from browsers of
    PUBLIC_BASE_URL's origin (any, when it is not set) with their ETag readable."""
    pipeline = _pipeline()
    storage = pipeline.storage
    if storage.bucket is None:
        raise click.ClickException("STORAGE_BACKEND is not s3: there is no bucket to create")
    storage.ensure_bucket()
    public = pipeline.settings.public_base_url
    origins = ["{0.scheme}://{0.netloc}".format(urlsplit(public))] if public else ["*"]
    days = -(-pipeline.settings.upload_ttl // 86400) + 1
    rules = storage.configure_direct_uploads(origins, days)
    click.echo(json.dumps({"bucket": storage.bucket} | rules))


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
    user = accounts_users.user_named(session, name)
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
    with accounts().db.reading() as session:
        if accounts_users.lookalike_taken(session, checked.username):
            raise click.ClickException("that username looks like an existing one")
    password = None if no_password else _read_password(password_stdin)
    try:
        user = accounts_users.do_create_user(
            accounts(), checked.username, checked.email, password=password, is_admin=admin
        )
    except accounts_users.UserExists:
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
    with accounts().db.reading() as session:
        user_id = _user(session, username).id
    ended = accounts_users.do_set_password(accounts(), user_id, password, revoke_keys=revoke_keys)
    report = {"username": username} | ended
    click.echo(json.dumps(report, ensure_ascii=False))


@users.command("make-admin")
@click.argument("username")
@click.option("--revoke", is_flag=True, help="take admin rights away instead")
def make_admin(username: str, revoke: bool):
    """Give a user admin rights, or take them away: every token and key of theirs acts
    with the new rights from its next request."""
    with accounts().db.reading() as session:
        user_id = _user(session, username).id
    accounts_users.do_set_admin(accounts(), user_id, not revoke)
    with accounts().db.reading() as session:
        described = _described(session.get(User, user_id))
    click.echo(json.dumps(described, ensure_ascii=False))


@users.command("set-quota")
@click.argument("username")
@click.argument("megabytes")
def set_quota(username: str, megabytes: str):
    """Give a user a quota of their own in MiB (0: none), or `default` for USER_QUOTA_MB's."""
    if megabytes == "default":
        quota = None
    elif megabytes.isdigit() and int(megabytes) < 2**31:
        quota = int(megabytes)
    else:
        raise click.ClickException("MEGABYTES is a whole number of MiB, or 'default'")
    with accounts().db.reading() as session:
        user_id = _user(session, username).id
    accounts_users.do_set_quota(accounts(), user_id, quota)
    with accounts().db.reading() as session:
        user = session.get(User, user_id)
        report = {
            "username": user.username,
            "quota_mb": user.quota_mb,
            "used_bytes": user.used_bytes,
        }
    click.echo(json.dumps(report, ensure_ascii=False))


@users.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def delete_user(username: str, yes: bool):
    """Delete an account: its files (through the pipeline), its logins and its API keys."""
    with accounts().db.reading() as session:
        user = _user(session, username)
    if user.deleted_at is not None:
        raise click.ClickException(f"no user {username!r}")
    if not yes:
        click.confirm(f"Delete {user.username!r} and all their files?", abort=True)
    report = accounts_users.do_delete_account(accounts(), _pipeline(), user.id)
    click.echo(json.dumps({"username": user.username} | report, ensure_ascii=False))


@users.command("list")
def list_users():
    """Every user, as JSON lines."""
    with accounts().db.reading() as session:
        for user in accounts_users.listed(session):
            click.echo(json.dumps(_described(user), ensure_ascii=False))


@keys_group.command("list")
@click.argument("username")
def list_keys(username: str):
    """A user's API keys (never the keys themselves), as JSON lines."""
    with accounts().db.reading() as session:
        user_id = _user(session, username).id
    for key in keys.keys_of(accounts(), user_id):
        described = {"id": key.id, "name": key.name, "prefix": key.prefix, "scopes": key.scopes}
        click.echo(json.dumps(described))


@keys_group.command("revoke")
@click.argument("key_id", type=int)
def revoke_key(key_id: int):
    """Revoke an API key by id: refused from the next request on."""
    if not keys.do_revoke_key(accounts(), key_id, None):
        raise click.ClickException(f"no API key {key_id}")
    click.echo(json.dumps({"revoked": key_id}))


def init_cli(app: Flask) -> None:
    for command in (
        stats,
        requeue_failed,
        reconcile,
        usage_check,
        create_bucket,
        users,
        keys_group,
    ):
        app.cli.add_command(command)

"""Operator commands: ``flask --app api stats | requeue-failed | reconcile | create-bucket``."""

from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select

from common.models import File, FileStatus, OutboxEntry
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


def init_cli(app: Flask) -> None:
    for command in (stats, requeue_failed, reconcile, create_bucket):
        app.cli.add_command(command)

"""Operator commands, run through Flask's CLI runner against the real stack."""

import io
import json

from sqlalchemy import update

from common.models import File, FileStatus
from tests.conftest import wait_for_status


def run(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def upload(client, data=b"x", name="a.txt"):
    reply = client.post(
        "/files/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )
    return reply.get_json()["filename"]


def test_stats_counts_files_by_status(app, client, clean_stack):
    stored = upload(client)
    rejected = upload(client, b"<html></html>", "x.png")
    wait_for_status(clean_stack.db, stored, {"stored"})
    wait_for_status(clean_stack.db, rejected, {"rejected"})
    report = run(app, "stats")
    assert report["files"]["stored"] == 1 and report["files"]["rejected"] == 1
    assert report["files"]["pending"] == 0


def test_requeue_failed_stores_the_file(app, client, clean_stack):
    name = upload(client)
    wait_for_status(clean_stack.db, name, {"stored"})
    # As if every push had failed: the bytes back in staging, the row failed.
    with clean_stack.db.session() as session:
        file = session.query(File).filter_by(name=name).one()
        session.execute(
            update(File).where(File.id == file.id).values(status=FileStatus.FAILED, error="down")
        )
    from pathlib import Path

    Path(clean_stack.settings.staging_dir, name).write_bytes(b"x")
    assert run(app, "requeue-failed", "--all") == {"requeued": [name]}
    file = wait_for_status(clean_stack.db, name, {"stored"})
    assert file.error is None


def test_requeue_needs_names_or_all(app):
    result = app.test_cli_runner().invoke(args=["requeue-failed"])
    assert result.exit_code != 0 and "--all" in result.output


def test_reconcile_runs_once(app):
    assert run(app, "reconcile") == {
        "reclaimed": 0,
        "published": 0,
        "failed": 0,
        "requeued": 0,
        "reaped": 0,
    }


def test_create_bucket(app, clean_stack):
    result = app.test_cli_runner().invoke(args=["create-bucket"])
    if clean_stack.settings.storage_backend == "s3":
        assert result.exit_code == 0
        assert json.loads(result.output) == {"bucket": clean_stack.settings.s3_bucket}
    else:
        assert result.exit_code != 0 and "not s3" in result.output

"""Operator commands, run through Flask's CLI runner against the real stack."""

import io
import json

import boto3
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
        "repaired": 0,
        "pruned": 0,
        "expired": 0,
    }


def test_create_bucket(app, clean_stack):
    result = app.test_cli_runner().invoke(args=["create-bucket"])
    if clean_stack.settings.storage_backend == "s3":
        assert result.exit_code == 0, result.output
        bucket = clean_stack.settings.s3_bucket
        assert json.loads(result.output) == {"bucket": bucket, "lifecycle": "set", "cors": "set"}
        store = boto3.client("s3", endpoint_url=clean_stack.settings.s3_endpoint_url)
        (rule,) = store.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert rule["Filter"] == {"Prefix": "uploads/"}
        assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}  # TTL 24 h
        (cors,) = store.get_bucket_cors(Bucket=bucket)["CORSRules"]
        assert cors["ExposeHeaders"] == ["ETag"] and "PUT" in cors["AllowedMethods"]
    else:
        assert result.exit_code != 0 and "not s3" in result.output


def cli(app, *args, stdin: str | None = None):
    result = app.test_cli_runner().invoke(args=list(args), input=stdin)
    return result


def test_users_create_log_in_and_list(app, client):
    made = cli(
        app,
        "users",
        "create",
        "root",
        "--email",
        "root@example.com",
        "--admin",
        "--password-stdin",
        stdin="a long password\n",
    )
    assert made.exit_code == 0, made.output
    assert json.loads(made.output) == {
        "id": json.loads(made.output)["id"],
        "username": "root",
        "email": "root@example.com",
        "is_admin": True,
        "has_password": True,
    }
    login = client.post(
        "/api/v2/auth/token", json={"username": "root", "password": "a long password"}
    )
    assert login.status_code == 200
    me = client.get("/api/v2/me", headers={"Authorization": f"Bearer {login.json['access_token']}"})
    assert me.json["is_admin"] is True
    assert (
        cli(app, "users", "create", "ROOT", "--email", "x@example.com", "--no-password").exit_code
        != 0
    )
    short = cli(
        app,
        "users",
        "create",
        "bob",
        "--email",
        "b@example.com",
        "--password-stdin",
        stdin="short\n",
    )
    assert short.exit_code != 0 and "8 to 256" in short.output
    bad = cli(app, "users", "create", "bad name", "--email", "b@example.com", "--no-password")
    assert bad.exit_code != 0
    listed = [json.loads(line) for line in cli(app, "users", "list").output.splitlines()]
    assert [u["username"] for u in listed] == ["root"]


def test_set_password_ends_the_users_logins(app, client):
    # An account made without a password cannot log in until an operator sets one.
    made = cli(app, "users", "create", "alice", "--email", "alice@example.com", "--no-password")
    assert made.exit_code == 0, made.output
    refused = client.post("/api/v2/auth/token", json={"username": "alice", "password": "whatever1"})
    assert refused.status_code == 401
    assert (
        cli(
            app, "users", "set-password", "alice", "--password-stdin", stdin="first password\n"
        ).exit_code
        == 0
    )
    tokens = client.post(
        "/api/v2/auth/token", json={"username": "alice", "password": "first password"}
    ).json
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/api/v2/me", headers=auth).status_code == 200
    changed = cli(
        app, "users", "set-password", "alice", "--password-stdin", stdin="second password\n"
    )
    assert json.loads(changed.output)["sessions_revoked"] == 1
    assert client.get("/api/v2/me", headers=auth).status_code == 401
    assert (
        client.post(
            "/api/v2/auth/token", json={"username": "alice", "password": "first password"}
        ).status_code
        == 401
    )
    assert (
        client.post(
            "/api/v2/auth/token", json={"username": "alice", "password": "second password"}
        ).status_code
        == 200
    )
    assert (
        cli(
            app, "users", "set-password", "nobody", "--password-stdin", stdin="x" * 10 + "\n"
        ).exit_code
        != 0
    )


def test_make_admin_and_revoke_a_key(app, client):
    cli(
        app,
        "users",
        "create",
        "alice",
        "--email",
        "a@example.com",
        "--password-stdin",
        stdin="a long password\n",
    )
    assert json.loads(cli(app, "users", "make-admin", "alice").output)["is_admin"] is True
    tokens = client.post(
        "/api/v2/auth/token", json={"username": "alice", "password": "a long password"}
    ).json
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    key = client.post("/api/v2/keys", headers=auth, json={"name": "ci"}).json
    as_key = {"Authorization": f"Bearer {key['key']}"}
    assert client.get("/api/v2/files", headers=as_key).status_code == 200
    listed = json.loads(cli(app, "keys", "list", "alice").output)
    assert listed["id"] == key["id"] and key["key"] not in cli(app, "keys", "list", "alice").output
    assert json.loads(cli(app, "keys", "revoke", str(key["id"])).output) == {"revoked": key["id"]}
    assert client.get("/api/v2/files", headers=as_key).status_code == 401
    assert cli(app, "keys", "revoke", str(key["id"])).exit_code != 0
    assert (
        json.loads(cli(app, "users", "make-admin", "alice", "--revoke").output)["is_admin"] is False
    )


def test_accounts_kept_apart_by_migration_answer_to_their_own_spelling(app, client, clean_stack):
    """Migration 0003 kept ``alice`` and ``ALICE`` apart (ALICE's key marked with its id): the
    operator naming ALICE changes ALICE, and ALICE logs in by her name."""
    from sqlalchemy import insert, select

    from common.models import User

    assert cli(app, "users", "create", "alice", "--email", "a@example.com", "--no-password")
    with clean_stack.db.session() as session:
        session.execute(
            insert(User).values(
                username="ALICE",
                email="upper@example.com",
                username_key="alice#dup-2",
                email_key="upper@example.com",
            )
        )
    for args in (("set-password", "ALICE", "--password-stdin"), ("make-admin", "ALICE")):
        result = cli(app, "users", *args, stdin="upper password\n")
        assert result.exit_code == 0, result.output
    with clean_stack.db.session() as session:
        rows = dict(session.execute(select(User.username, User.is_admin)).all())
        hashes = dict(session.execute(select(User.username, User.password_hash)).all())
    assert rows == {"alice": False, "ALICE": True}
    assert hashes["alice"] is None and hashes["ALICE"]
    tokens = client.post(
        "/api/v2/auth/token", json={"username": "ALICE", "password": "upper password"}
    ).json
    me = client.get("/api/v2/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json["username"] == "ALICE"


def test_set_password_with_revoke_keys_ends_the_keys_too(app, client):
    made = cli(
        app,
        "users",
        "create",
        "carol",
        "--email",
        "c@example.com",
        "--password-stdin",
        stdin="first password\n",
    )
    assert made.exit_code == 0, made.output
    tokens = client.post(
        "/api/v2/auth/token", json={"username": "carol", "password": "first password"}
    ).json
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    key = client.post("/api/v2/keys", json={"name": "k"}, headers=auth).json["key"]
    by_key = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v2/files", headers=by_key).status_code == 200
    kept = cli(app, "users", "set-password", "carol", "--password-stdin", stdin="second pass\n")
    assert json.loads(kept.output) == {"username": "carol", "sessions_revoked": 1}
    assert client.get("/api/v2/files", headers=by_key).status_code == 200  # keys stay
    ended = cli(
        app,
        "users",
        "set-password",
        "carol",
        "--password-stdin",
        "--revoke-keys",
        stdin="third pass!\n",
    )
    assert json.loads(ended.output)["keys_revoked"] == 1
    assert client.get("/api/v2/files", headers=by_key).status_code == 401


def test_users_delete_ends_the_account_and_its_files(app, client, clean_stack):
    made = cli(
        app,
        "users",
        "create",
        "dora",
        "--email",
        "d@example.com",
        "--password-stdin",
        stdin="dora's password\n",
    )
    assert made.exit_code == 0, made.output
    tokens = client.post(
        "/api/v2/auth/token", json={"username": "dora", "password": "dora's password"}
    ).json
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    body = {"file": (io.BytesIO(b"mine"), "m.txt")}
    name = client.post("/api/v2/files", data=body, headers=auth).json["name"]
    deleted = cli(app, "users", "delete", "dora", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.output) == {
        "username": "dora",
        "sessions_revoked": 1,
        "keys_revoked": 0,
        "files_deleted": 1,
    }
    assert client.get("/api/v2/me", headers=auth).status_code == 401
    wait_for_status(clean_stack.db, name, {"deleted"})
    listed = [json.loads(line) for line in cli(app, "users", "list").output.splitlines()]
    assert listed == []
    assert cli(app, "users", "delete", "dora", "--yes").exit_code != 0

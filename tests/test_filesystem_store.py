"""The filesystem store's own promises: durable writes, no leftovers, forged URLs refused."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from api.services import services
from common.storage.filesystem import TEMPORARY
from tests.test_storage_contract import put


@pytest.fixture
def app_and_store(tmp_path):
    from api import create_app
    from tests.conftest import close_app, migrate, settings_for

    database_url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate(database_url)
    app = create_app(settings_for(tmp_path, database_url=database_url))
    yield app, services(app).pipeline.storage
    close_app(app)


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """Every path fsynced from now on (the real fsync still runs)."""
    paths: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


def test_an_object_its_sidecar_and_their_names_reach_the_disk(app_and_store, tmp_path, synced):
    _, storage = app_and_store
    put(storage, tmp_path)
    root = str(storage.root)
    assert synced.count(root) == 2  # after the object's rename, and after the sidecar's
    temporaries = [p for p in synced if p.startswith(f"{root}/{TEMPORARY}/")]
    assert len(temporaries) == 2  # the object's bytes and the sidecar's, before each rename


def test_a_staged_upload_and_its_name_reach_the_disk(tmp_path, synced):
    from datetime import UTC, datetime

    from api.multipart import stage_upload
    from testkit import multipart

    body = multipart.file_body("a.txt", b"durable")
    staged = stage_upload(
        io.BytesIO(body),
        multipart.CONTENT_TYPE,
        len(body),
        staging_dir=tmp_path / "staging",
        max_bytes=1024,
        allowed_extensions=("txt",),
        now=datetime.now(UTC),
    )
    assert synced == [str(staged.path), str(tmp_path / "staging")]


def test_sqlite_commits_survive_a_power_loss(tmp_path):
    from common.db import Database

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    db.dispose()


def test_what_a_killed_writer_left_is_swept_and_a_write_under_way_is_not(app_and_store):
    _, storage = app_and_store
    temporary = storage.root / TEMPORARY
    temporary.mkdir(parents=True, exist_ok=True)
    left = temporary / "put-abandoned"
    left.write_bytes(b"x" * 3 * 1024 * 1024)
    hour_ago = time.time() - 3700
    os.utime(left, (hour_ago, hour_ago))
    under_way = temporary / "put-now"
    under_way.write_bytes(b"y")
    assert storage.sweep(3600) == 1
    assert not left.exists() and under_way.exists()


def test_the_reconciler_sweeps_the_store(app_and_store):
    from common.files.reconcile import reconcile

    app, storage = app_and_store
    temporary = storage.root / TEMPORARY
    temporary.mkdir(parents=True, exist_ok=True)
    left = temporary / "put-abandoned"
    left.write_bytes(b"x")
    os.utime(left, (0, 0))
    assert reconcile(services(app).pipeline).reaped == 1
    assert not left.exists()


@pytest.mark.parametrize("signature", ["%C3%A9", "%FF", "%00", "z" * 64])
def test_a_forged_signature_of_any_text_is_refused(app_and_store, signature):
    app, _ = app_and_store
    reply = app.test_client().get(
        f"/storage/20250101_000000_0123456789abcdef.txt?expires=9999999999&signature={signature}"
    )
    assert reply.status_code == 403
    assert reply.get_json()["code"] == "INVALID_SIGNATURE"


def test_an_object_with_a_cut_sidecar_is_absent(app_and_store, tmp_path):
    app, storage = app_and_store
    key, _ = put(storage, tmp_path)
    url = storage.presign_get(key, 60)
    Path(storage.root, key + ".json").write_bytes(b"")  # as a crash before the fix could leave
    with pytest.raises(FileNotFoundError):
        storage.head(key)
    reply = app.test_client().get(url)
    assert reply.status_code == 404 and reply.get_json()["code"] == "FILE_NOT_FOUND"

"""A full staging disk is the server's problem: 507 JSON, and no partial file left behind."""

import subprocess
from dataclasses import replace

import pytest

from api import create_app
from testkit import multipart
from tests.conftest import close_app


@pytest.fixture
def tiny_staging(tmp_path):
    """A 256 KiB tmpfs as STAGING_DIR (the tests run as root, as CI does)."""
    mount = tmp_path / "staging"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_staging_disk_is_507_and_leaves_nothing(clean_stack, tiny_staging):
    app = create_app(replace(clean_stack.settings, staging_dir=str(tiny_staging)))
    try:
        client = app.test_client()
        body = multipart.file_body("big.txt", b"a" * (1024 * 1024))
        reply = client.post("/files/upload", data=body, content_type=multipart.CONTENT_TYPE)
        assert reply.status_code == 507
        assert reply.get_json()["code"] == "INSUFFICIENT_STORAGE"
        assert list(tiny_staging.iterdir()) == []
        assert client.get("/files").get_json()["count"] == 0
        small = multipart.file_body("small.txt", b"fits")
        assert (
            client.post(
                "/files/upload", data=small, content_type=multipart.CONTENT_TYPE
            ).status_code
            == 201
        )
    finally:
        close_app(app)

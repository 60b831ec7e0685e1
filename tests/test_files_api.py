"""The file routes end to end: HTTP in, a real Celery worker, bytes in the real store."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from common.models import FileStatus
from common.storage import from_settings
from tests import samples
from tests.conftest import eventually, wait_for_status

NAME = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{16}\.[a-z]+$")


def upload(client, filename: str, data: bytes, headers=None):
    return client.post(
        "/files/upload",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
        headers=headers or {},
    )


def fetch(client, url: str):
    """GET a download URL the way a client would: over HTTP for S3, via the API otherwise."""
    if "/storage/" in url:
        with client.get(url) as reply:
            return reply.status_code, reply.headers, reply.data
    reply = requests.get(url, timeout=10)
    return reply.status_code, reply.headers, reply.content


def stored(client, stack, filename: str, data: bytes) -> dict:
    reply = upload(client, filename, data)
    assert reply.status_code == 201, reply.get_json()
    wait_for_status(stack.db, reply.get_json()["filename"], {"stored"})
    return reply.get_json()


def test_upload_is_accepted_at_once_then_stored(client, clean_stack):
    data = "Привет, мир\n".encode()
    reply = upload(client, "document.txt", data)
    assert reply.status_code == 201
    body = reply.get_json()
    assert body["message"] == "Файл успешно загружен"
    assert NAME.match(body["filename"]) and body["filename"].endswith(".txt")
    assert body["original_name"] == "document.txt"
    assert body["size"] == len(data)
    assert body["content_type"] == "text/plain"
    assert body["status"] == "pending"  # the reply is the row as accepted
    assert body["status_url"].endswith(f"/files/{body['filename']}/info")
    assert reply.headers["Location"] == body["status_url"]
    info = body["file_info"]
    assert info["name"] == body["filename"]
    assert info["metadata"]["original_name"] == "document.txt"
    assert info["metadata"]["file_size"] == str(len(data))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", info["metadata"]["upload_time"])

    wait_for_status(clean_stack.db, body["filename"], {"stored"})
    info = client.get(f"/files/{body['filename']}/info").get_json()
    assert info["status"] == "stored"
    assert info["etag"] and info["sha256"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", info["last_modified"])
    status, headers, content = fetch(client, info["download_url"])
    assert status == 200 and content == data
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Content-Disposition"].startswith("attachment;")


@pytest.mark.parametrize("ext", sorted(samples.VALID))
def test_every_allowed_type_is_stored(client, clean_stack, ext):
    data = samples.VALID[ext]()
    body = stored(client, clean_stack, f"sample.{ext}", data)
    info = client.get(f"/files/{body['filename']}/info").get_json()
    status, _, content = fetch(client, info["download_url"])
    assert status == 200 and content == data


def test_metadata_task_adds_dimensions_and_pages(client, clean_stack):
    png = stored(client, clean_stack, "pic.png", samples.png((31, 17)))["filename"]
    pdf = stored(client, clean_stack, "doc.pdf", samples.pdf(3))["filename"]

    def metadata(name):
        for _ in range(200):
            meta = client.get(f"/files/{name}/info").get_json()["metadata"]
            if len(meta) > 4:
                return meta
            time.sleep(0.05)
        raise AssertionError(f"no metadata for {name}")

    meta = metadata(png)
    assert (meta["width"], meta["height"], meta["format"]) == (31, 17, "PNG")
    assert metadata(pdf)["pages"] == 3


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("evil.png", samples.HTML),
        ("setup.pdf", samples.EXE),
        ("notes.txt", b"abc\x00def"),
        ("report.docx", samples.plain_zip()),
        ("bomb.png", samples.png_bomb()),
        ("cut.png", samples.png()[:50]),
    ],
)
def test_spoofed_content_is_rejected_and_never_downloadable(client, clean_stack, filename, data):
    reply = upload(client, filename, data)
    assert reply.status_code == 201
    name = reply.get_json()["filename"]
    file = wait_for_status(clean_stack.db, name, {"rejected", "stored"})
    assert file.status == FileStatus.REJECTED
    info = client.get(f"/files/{name}/info").get_json()
    assert info["status"] == "rejected"
    assert info["error"]
    assert info["download_url"] is None
    download = client.get(f"/files/{name}/download")
    assert download.status_code == 409
    assert download.get_json()["status"] == "rejected"
    with pytest.raises(FileNotFoundError):
        from_settings(clean_stack.settings).head(name)
    staged = Path(clean_stack.settings.staging_dir) / name
    assert eventually(lambda: not staged.exists())  # removed right after the state commits


def test_prefer_wait_returns_the_finished_file(client):
    reply = upload(client, "image.gif", samples.gif(), headers={"Prefer": "wait=10"})
    assert reply.status_code == 201
    body = reply.get_json()
    assert body["status"] == "stored"
    assert body["download_url"] and body["file_info"]["etag"]
    assert reply.headers["Preference-Applied"] == "wait=10"


@pytest.mark.parametrize(
    "prefer", ["wait=0", "respond-async, wait=0", "wait=abc", "handling=lenient"]
)
def test_prefer_without_a_usable_wait_answers_at_once(client, prefer):
    reply = upload(client, "now.txt", b"x", headers={"Prefer": prefer})
    assert reply.status_code == 201
    assert reply.get_json()["status"] == "pending"
    assert "Preference-Applied" not in reply.headers


def test_prefer_wait_reports_rejection_as_422(client):
    reply = upload(client, "fake.jpg", samples.HTML, headers={"Prefer": "wait=10"})
    assert reply.status_code == 422
    body = reply.get_json()
    assert body["code"] == "FILE_REJECTED"
    assert "text/html" in body["details"]["reason"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("a\x00b.txt", "ab.txt"),
        ("tab\there\x1b[31m.txt", "tabhere[31m.txt"),
        ("Отчёт.txt", "Отчёт.txt"),
        ("я" * 1000 + ".txt", "я" * 251 + ".txt"),
        ("file.php.txt", "file.php.txt"),
    ],
)
def test_hostile_names_are_cleaned_and_never_used_as_paths(client, raw, expected):
    reply = upload(client, raw, b"safe")
    assert reply.status_code == 201, reply.get_json()
    body = reply.get_json()
    assert body["original_name"] == expected
    assert NAME.match(body["filename"])


def _form(field: str, data: bytes, filename: str):
    return lambda: {"data": {field: (io.BytesIO(data), filename)}}


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (_form("document", b"x", "a.txt"), 400, "NO_FILE"),
        (_form("file", b"x", ""), 400, "EMPTY_FILENAME"),
        (lambda: {"data": {}}, 400, "NO_FILE"),
        (
            lambda: {"data": "file=abc", "content_type": "application/x-www-form-urlencoded"},
            400,
            "NOT_MULTIPART",
        ),
        (lambda: {"data": b"garbage"}, 400, "MALFORMED_MULTIPART"),
        (_form("file", b"MZ", "tool.exe"), 415, "EXTENSION_NOT_ALLOWED"),
        (_form("file", b"x", "noextension"), 415, "EXTENSION_NOT_ALLOWED"),
    ],
)
def test_bad_uploads_get_json_errors(client, clean_stack, make, status, code):
    kwargs = {"content_type": "multipart/form-data"} | make()
    reply = client.post("/files/upload", **kwargs)
    assert reply.status_code == status
    body = reply.get_json()
    assert body["code"] == code and body["error"]
    if status == 415:
        assert body["error"] == "Недопустимый тип файла"
        assert body["allowed_extensions"] == list(clean_stack.settings.allowed_extensions)
    assert client.get("/files").get_json()["count"] == 0


def test_list_filters_by_prefix_and_limits(client, clean_stack):
    names = sorted(upload(client, f"f{i}.txt", b"x").get_json()["filename"] for i in range(3))
    listed = client.get("/files").get_json()
    assert listed["count"] == 3 and listed["prefix"] == ""
    assert [f["name"] for f in listed["files"]] == names
    assert client.get("/files?limit=2").get_json()["count"] == 2
    prefixed = client.get(f"/files?prefix={names[0][:8]}").get_json()
    assert prefixed["count"] == 3 and prefixed["prefix"] == names[0][:8]
    assert client.get("/files?prefix=images/").get_json() == {
        "files": [],
        "count": 0,
        "prefix": "images/",
    }
    assert client.get("/files?prefix=%25").get_json()["count"] == 0


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1", "1.5", ""])
def test_list_rejects_bad_limits(client, limit):
    reply = client.get(f"/files?limit={limit}")
    assert reply.status_code == 400
    assert reply.get_json()["code"] == "INVALID_LIMIT"


@pytest.mark.parametrize(
    "name",
    ["nope.txt", "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "20250906_123456_abc.txt", "%00"],
)
def test_unknown_names_are_404(client, name):
    for method, path in (
        ("get", f"/files/{name}/info"),
        ("get", f"/files/{name}/download"),
        ("delete", f"/files/{name}"),
    ):
        reply = getattr(client, method)(path)
        assert reply.status_code == 404, path
        assert reply.get_json() == {"error": "Файл не найден", "code": "FILE_NOT_FOUND"}, path


def test_download_of_pending_file_is_409(client, clean_stack):
    from sqlalchemy import update

    from common.models import File

    name = upload(client, "wait.txt", b"x").get_json()["filename"]
    wait_for_status(clean_stack.db, name, {"stored"})
    with clean_stack.db.session() as session:  # seen as a file the worker has not reached yet
        session.execute(update(File).where(File.name == name).values(status=FileStatus.PENDING))
    reply = client.get(f"/files/{name}/download")
    assert reply.status_code == 409
    assert reply.get_json()["status"] == "pending"


def test_download_reply_matches_the_documented_shape(client, clean_stack):
    pdf = samples.pdf()
    body = stored(client, clean_stack, "report.pdf", pdf)
    reply = client.get(f"/files/{body['filename']}/download")
    assert reply.status_code == 200
    data = reply.get_json()
    assert data["expires_in"] == 300
    assert data["file_info"]["name"] == body["filename"]
    assert data["file_info"]["content_type"] == "application/pdf"
    status, headers, content = fetch(client, data["download_url"])
    assert status == 200 and content == pdf
    assert unquote(headers["Content-Disposition"].split("''")[1]) == "report.pdf"


def test_download_url_and_its_file_info_url_are_the_same_fresh_url(client, clean_stack):
    name = stored(client, clean_stack, "twice.txt", b"one url")["filename"]
    cached = client.get(f"/files/{name}/info").get_json()["download_url"]  # now in the cache
    time.sleep(1.1)  # a URL signed a second later differs in its signing time
    data = client.get(f"/files/{name}/download").get_json()
    assert data["file_info"]["download_url"] == data["download_url"] != cached


def test_delete_removes_row_and_object(client, clean_stack):
    body = stored(client, clean_stack, "gone.txt", b"bye")
    name = body["filename"]
    url = client.get(f"/files/{name}/download").get_json()["download_url"]
    reply = client.delete(f"/files/{name}")
    assert reply.status_code == 200
    assert reply.get_json() == {"message": "Файл успешно удален", "filename": name}
    assert client.get(f"/files/{name}/info").status_code == 404
    assert client.delete(f"/files/{name}").status_code == 404
    assert client.get("/files").get_json()["count"] == 0
    with pytest.raises(FileNotFoundError):
        from_settings(clean_stack.settings).head(name)
    assert fetch(client, url)[0] in (403, 404)


def test_storage_health(client):
    reply = client.get("/health/storage")
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["status"] == "healthy"
    assert body["message"] == "Object Storage доступен"
    assert body["timestamp"].endswith("Z")

"""A corpus of hostile requests across every route, sent over real HTTP to gunicorn.

Each gets its SPEC status and, for errors, the JSON error shape; none gets a 500. Uploads whose
content lies about its type are accepted and end ``rejected``, never downloadable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest
import requests

from testkit import multipart
from tests import samples

UPLOAD = "/files/upload"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": multipart.CONTENT_TYPE}


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int | set[int]
    code: str | None = None
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    ends: str | None = None  # for accepted uploads: the final status


def upload_case(name, filename, data, status=201, code=None, ends="stored"):
    return Case(name, "POST", UPLOAD, status, code, multipart.file_body(filename, data), FORM, ends)


def raw_upload(name, body, status, code, content_type=multipart.CONTENT_TYPE):
    return Case(name, "POST", UPLOAD, status, code, body, {"Content-Type": content_type})


def users(name, body, status=400, code="VALIDATION_ERROR", headers=JSON):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(name, "POST", "/users", status, code, raw, headers)


def get(name, path, status, code=None, method="GET"):
    return Case(name, method, path, status, code)


FAKE = "20250101_000000_0123456789abcdef.txt"

CASES = [
    # Names: accepted under a generated name when the extension is allowed.
    upload_case("traversal-name", "../../etc/passwd.txt", b"x"),
    upload_case("nul-in-name", "a\x00b.txt", b"x"),
    upload_case("control-chars", "\x1b[31mred\x07.txt", b"x"),
    upload_case("1000-char-name", "n" * 996 + ".txt", b"x"),
    upload_case("cyrillic-only", "отчёт.txt", "текст".encode()),
    upload_case("double-extension", "evil.php.png", samples.png()),
    upload_case("windows-path", "C:\\Windows\\system32\\a.txt", b"x"),
    upload_case("no-extension-cyrillic", "файл", b"x", 415, "EXTENSION_NOT_ALLOWED", None),
    upload_case("php-last", "shell.png.php", b"<?php", 415, "EXTENSION_NOT_ALLOWED", None),
    upload_case("exe", "setup.exe", samples.EXE, 415, "EXTENSION_NOT_ALLOWED", None),
    upload_case("dot-only", "..", b"x", 415, "EXTENSION_NOT_ALLOWED", None),
    # Content that lies about its type: accepted, then rejected by the worker.
    upload_case("html-as-png", "a.png", samples.HTML, ends="rejected"),
    upload_case("exe-as-pdf", "a.pdf", samples.EXE, ends="rejected"),
    upload_case("nul-in-txt", "a.txt", b"text\x00more", ends="rejected"),
    upload_case("png-as-jpg", "a.jpg", samples.png(), ends="rejected"),
    upload_case("gif-as-jpeg", "a.jpeg", samples.gif(), ends="rejected"),
    upload_case("pdf-as-gif", "a.gif", samples.pdf(), ends="rejected"),
    upload_case("zip-as-docx", "a.docx", samples.plain_zip(), ends="rejected"),
    upload_case("docx-as-doc", "a.doc", samples.docx(), ends="rejected"),
    upload_case("truncated-png", "a.png", samples.png()[:60], ends="rejected"),
    upload_case("truncated-jpeg", "a.jpg", samples.jpeg()[:40], ends="rejected"),
    upload_case("bomb-png", "a.png", samples.png_bomb(), ends="rejected"),
    upload_case("empty-pdf", "a.pdf", b"", ends="rejected"),
    # Broken forms.
    raw_upload("wrong-field", multipart.file_body("a.txt", b"x", field="upload"), 400, "NO_FILE"),
    raw_upload(
        "duplicate-file-parts",
        multipart.body(
            multipart.part("file", b"1", "a.txt"), multipart.part("file", b"2", "b.txt")
        ),
        400,
        "MULTIPLE_FILES",
    ),
    raw_upload(
        "missing-boundary",
        multipart.file_body("a.txt", b"x"),
        400,
        "MALFORMED_MULTIPART",
        "multipart/form-data",
    ),
    raw_upload("not-multipart", b"raw bytes", 400, "NOT_MULTIPART", "application/octet-stream"),
    raw_upload("upload-no-content-type", b"raw bytes", 400, "NOT_MULTIPART", ""),
    raw_upload("empty-multipart", b"", 400, "MALFORMED_MULTIPART"),
    raw_upload(
        "unterminated", multipart.file_body("a.txt", b"x")[:-20], 400, "MALFORMED_MULTIPART"
    ),
    raw_upload("empty-filename", multipart.file_body("", b"x"), 400, "EMPTY_FILENAME"),
    raw_upload("no-parts", multipart.body(), 400, "NO_FILE"),
    upload_case("over-size", "big.txt", b"a" * (16 * 1024 * 1024 + 1), 413, "FILE_TOO_LARGE", None),
    # Users.
    users("json-truncated", b'{"username": "a"', code="INVALID_JSON"),
    users("json-garbage", b"\x00\x01\x02", code="INVALID_JSON"),
    users("json-deep", b"[" * 5000 + b"]" * 5000, code="INVALID_JSON"),
    users("json-array", [{"username": "a", "email": "a@example.com"}], code="INVALID_JSON"),
    users("json-latin1", '{"username": "ä"}'.encode("latin-1"), code="INVALID_JSON"),
    users("username-int", {"username": 5, "email": "a@example.com"}),
    users("email-list", {"username": "a", "email": ["a@example.com"]}),
    users("username-null", {"username": None, "email": "a@example.com"}),
    users("username-long", {"username": "u" * 65, "email": "a@example.com"}),
    users("email-long", {"username": "a", "email": "e" * 300 + "@example.com"}),
    users("email-invalid", {"username": "a", "email": "@@"}),
    users("username-spaces", {"username": "a b", "email": "a@example.com"}),
    users("fields-missing", {}),
    users("body-too-big", {"username": "a", "pad": "x" * 70_000}, 413, "PAYLOAD_TOO_LARGE"),
    users(
        "text-plain", b"username=a", 415, "UNSUPPORTED_MEDIA_TYPE", {"Content-Type": "text/plain"}
    ),
    users("no-content-type", b"{}", 415, "UNSUPPORTED_MEDIA_TYPE", {}),
    # Listing.
    get("limit-zero", "/files?limit=0", 400, "INVALID_LIMIT"),
    get("limit-over", "/files?limit=1001", 400, "INVALID_LIMIT"),
    get("limit-negative", "/files?limit=-5", 400, "INVALID_LIMIT"),
    get("limit-text", "/files?limit=abc", 400, "INVALID_LIMIT"),
    get("limit-huge", "/files?limit=99999999999999999999999", 400, "INVALID_LIMIT"),
    get("limit-float", "/files?limit=2.5", 400, "INVALID_LIMIT"),
    get("prefix-nul", "/files?prefix=%00", 200),
    get("prefix-wildcards", "/files?prefix=%25_%25", 200),
    get("prefix-long", "/files?prefix=" + "p" * 5000, 200),
    get("prefix-traversal", "/files?prefix=../../", 200),
    # Path parameters.
    get("encoded-traversal-info", "/files/..%2F..%2Fetc%2Fpasswd/info", 404, "FILE_NOT_FOUND"),
    get("encoded-dots-download", "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd/download", 404),
    get("absolute-path-info", "/files/%2Fetc%2Fpasswd/info", 404),
    get("nul-name", "/files/%00/info", 404, "FILE_NOT_FOUND"),
    get("unknown-generated-name", f"/files/{FAKE}/info", 404, "FILE_NOT_FOUND"),
    get("delete-traversal", "/files/..%2F..%2Fetc%2Fpasswd", 404, "FILE_NOT_FOUND", "DELETE"),
    get("delete-unknown", f"/files/{FAKE}", 404, "FILE_NOT_FOUND", "DELETE"),
    # 403 from the filesystem store's signed-URL route; 404 where the store is S3 (no route).
    get("storage-forged", f"/storage/{FAKE}?expires=99999999999&signature=forged", {403, 404}),
    get("storage-traversal", "/storage/..%2F..%2Fetc%2Fpasswd?expires=1&signature=x", {403, 404}),
    get("url-too-long", "/files?prefix=" + "p" * 9000, 414, "URI_TOO_LONG"),
    # Routes and methods.
    get("unknown-route", "/admin", 404, "NOT_FOUND"),
    get("put-upload", UPLOAD, 405, "METHOD_NOT_ALLOWED", "PUT"),
    get("patch-users", "/users", 405, "METHOD_NOT_ALLOWED", "PATCH"),
    get("delete-root", "/", 405, "METHOD_NOT_ALLOWED", "DELETE"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_request(stack_api, case):
    reply = requests.request(
        case.method, stack_api + case.path, data=case.body, headers=case.headers, timeout=30
    )
    expected = case.status if isinstance(case.status, set) else {case.status}
    assert reply.status_code in expected, reply.text[:300]
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    if reply.status_code >= 400:
        assert body["error"] and body["code"]
        if case.code:
            assert body["code"] == case.code
    if case.ends:
        _assert_ends(stack_api, body["filename"], case.ends)


def _assert_ends(api: str, name: str, expected: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        info = requests.get(f"{api}/files/{name}/info", timeout=5).json()
        if info["status"] in ("stored", "rejected", "failed"):
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    assert info["status"] == expected, info
    download = requests.get(f"{api}/files/{name}/download", timeout=5)
    if expected == "rejected":
        assert info["error"] and info["download_url"] is None
        assert download.status_code == 409
    else:
        assert download.status_code == 200


def test_a_chunked_upload_cut_off_mid_chunk_is_a_malformed_body(gunicorn_api, clean_stack):
    """The client promises a 1000-byte chunk, sends a few bytes of it and closes: 400, never a
    500, and nothing staged."""
    import socket
    from pathlib import Path
    from urllib.parse import urlsplit

    address = urlsplit(gunicorn_api)
    staging = Path(clean_stack.settings.staging_dir)
    before = set(staging.glob("*"))
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello'
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            b"POST /files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n" + b"3e8\r\n" + part
        )
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body)["code"] == "MALFORMED_MULTIPART"
    assert set(staging.glob("*")) == before


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",  # not UTF-8
        b'{"username": "a", "email": ',  # cut off
        b'{"n": ' + b"9" * 5000 + b"}",  # a number past the integer limits
    ],
)
def test_refusals_say_what_was_wrong_in_the_apis_words(client, body):
    reply = client.post("/users", data=body, headers=JSON)
    assert reply.status_code == 400
    details = reply.get_json()["details"]
    assert details in ("the body is not UTF-8", "not valid JSON") or details.startswith(
        "not valid JSON at line "
    ), details


def test_generated_urls_never_reflect_an_unchecked_host(gunicorn_api):
    """PUBLIC_BASE_URL unset: a Host outside ALLOWED_HOSTS (localhost names) is refused."""
    reply = requests.get(f"{gunicorn_api}/files", headers={"Host": "evil.example"}, timeout=5)
    assert reply.status_code == 400 and reply.json()["code"] == "HOST_NOT_ALLOWED"
    redirect = requests.get(
        f"{gunicorn_api}/docs", headers={"Host": "evil.example"}, allow_redirects=False, timeout=5
    )
    assert redirect.status_code == 400
    assert requests.get(f"{gunicorn_api}/files", timeout=5).status_code == 200


def test_public_base_url_names_every_generated_url(clean_stack, tmp_path):
    from tests.conftest import start_gunicorn

    base = "https://files.example.com/pipeline"
    server = start_gunicorn(clean_stack.settings, tmp_path / "api.log", PUBLIC_BASE_URL=base)
    try:
        reply = requests.post(
            f"{server.url}/files/upload",
            data=multipart.file_body("a.txt", b"where am I"),
            headers=FORM | {"Host": "evil.example"},
            timeout=10,
        )
        docs = requests.get(
            f"{server.url}/docs", headers={"Host": "evil.example"}, allow_redirects=False, timeout=5
        )
    finally:
        server.stop()
    assert reply.status_code == 201
    name = reply.json()["filename"]
    assert reply.headers["Location"] == f"{base}/files/{name}/info"
    assert reply.json()["status_url"] == f"{base}/files/{name}/info"
    assert docs.headers["Location"] == f"{base}/docs/"

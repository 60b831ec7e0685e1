"""Size limits over real HTTP against gunicorn: the exact edge, and bodies that never end."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from testkit import multipart

MIB = 1024 * 1024


def staged_files(stack) -> list[Path]:
    staging = Path(stack.settings.staging_dir)
    return [p for p in staging.iterdir()] if staging.exists() else []


def test_exactly_the_limit_is_accepted_one_byte_more_is_413(gunicorn_api, clean_stack):
    limit = clean_stack.settings.max_upload_bytes
    ok = requests.post(
        f"{gunicorn_api}/files/upload", files={"file": ("edge.txt", b"a" * limit)}, timeout=60
    )
    assert ok.status_code == 201
    assert ok.json()["size"] == limit
    before = set(staged_files(clean_stack))
    over = requests.post(
        f"{gunicorn_api}/files/upload", files={"file": ("over.txt", b"a" * (limit + 1))}, timeout=60
    )
    assert over.status_code == 413
    assert over.json() == {
        "error": "Файл слишком большой",
        "code": "FILE_TOO_LARGE",
        "max_size_mb": 16,
    }
    assert set(staged_files(clean_stack)) <= before
    assert requests.get(f"{gunicorn_api}/files", timeout=10).json()["count"] == 1


def _raw_request(url: str, head: bytes):
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(head)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return status, json.loads(body)


def _upload_head(length_header: str) -> bytes:
    return (
        "POST /files/upload HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: {multipart.CONTENT_TYPE}\r\n{length_header}\r\n\r\n"
    ).encode()


def test_declared_gigabyte_is_refused_without_reading(gunicorn_api, clean_stack):
    head = _upload_head(f"Content-Length: {1024**3}")
    before = set(staged_files(clean_stack))
    sock = _raw_request(gunicorn_api, head)
    started = time.monotonic()
    status, body = _read_response(sock)
    sock.close()
    assert status == 413 and body["code"] == "FILE_TOO_LARGE"
    assert time.monotonic() - started < 5
    assert set(staged_files(clean_stack)) <= before


def test_streamed_gigabyte_is_cut_off_at_the_limit(gunicorn_api, clean_stack):
    head = _upload_head("Transfer-Encoding: chunked")
    before = set(staged_files(clean_stack))
    sock = _raw_request(gunicorn_api, head)
    preamble = multipart.part("file", b"", "huge.txt")[:-2]
    payload = b"a" * 65536
    frames = [
        b"%x\r\n%s\r\n" % (len(preamble), preamble),
        b"%x\r\n%s\r\n" % (len(payload), payload),
    ]
    sent = 0
    sock.sendall(frames[0])
    try:
        while sent < 1024**3:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(frames[1])
            sent += len(payload)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    status, body = _read_response(sock)
    sock.close()
    assert status == 413 and body["max_size_mb"] == 16
    assert sent < 64 * MIB  # the server stopped reading near the 16 MiB limit
    assert set(staged_files(clean_stack)) <= before
    assert requests.get(f"{gunicorn_api}/files", timeout=10).json()["count"] == 0

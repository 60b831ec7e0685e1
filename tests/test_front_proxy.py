"""The shipped nginx configuration in front of a real gunicorn: slow clients, limits, client IPs.

nginx is Debian's package (``scripts/ensure-services`` installs it when missing), run with the
configuration rendered from ``deploy/nginx/nginx.conf.template`` exactly as shipped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import requests

from testkit import multipart
from testkit.live import SseClient, WsClient, collect
from testkit.nginx import start_nginx
from testkit.processes import start_realtime
from tests.accounts import account
from tests.conftest import Server, eventually, free_port, start_gunicorn

#: client_header_timeout and client_body_timeout of the shipped configuration.
PROXY_TIMEOUT = 5


@dataclass
class Proxy:
    host: str
    port: int
    api: Server
    process: subprocess.Popen

    def request(self, method: str, path: str, *, source: str = "127.0.0.1", **kwargs):
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=10, source_address=(source, 0)
        )
        try:
            conn.request(method, path, **kwargs)
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()


@pytest.fixture
def proxy(clean_stack, tmp_path) -> Iterator[Proxy]:
    """gunicorn behind nginx; on S3, the store's presigned URLs go through nginx too (as in the
    compose stack: S3_PUBLIC_ENDPOINT_URL is the proxy's address)."""
    settings, store = replace(clean_stack.settings, ratelimit_enabled=True), None
    port = free_port()
    if settings.storage_backend == "s3":
        upstream = settings.s3_endpoint_url.removeprefix("http://")
        store = {"STORE_UPSTREAM": upstream, "S3_BUCKET": settings.s3_bucket}
        settings = replace(settings, s3_public_endpoint_url=f"http://127.0.0.1:{port}")
    api = start_gunicorn(
        settings, tmp_path / "gunicorn.log", TRUSTED_PROXY_COUNT="1", GUNICORN_THREADS="4"
    )
    try:
        nginx = start_nginx(tmp_path, port, api.url.removeprefix("http://"), store=store)
    except BaseException:  # no gunicorn left behind when nginx cannot start
        api.stop()
        raise
    yield Proxy("127.0.0.1", port, api, nginx)
    nginx.terminate()
    nginx.wait(10)
    api.stop()


def loopback_address() -> str:
    """A client address of its own (127.0.0.0/8 is all loopback), so that rate-limit budgets
    of earlier runs never meet."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096, socket.MSG_DONTWAIT) == b"" or _closed(sock)
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_slow_clients_do_not_delay_others_and_are_cut_off(proxy):
    """200 sockets trickle their headers a byte a second; 50 send an upload's headers and then
    pause longer than the body timeout. Every other client is served meanwhile, and nginx cuts
    each slow one within its timeouts."""
    slow_headers = [socket.create_connection((proxy.host, proxy.port)) for _ in range(200)]
    slow_bodies = [socket.create_connection((proxy.host, proxy.port)) for _ in range(50)]
    started = time.monotonic()
    for sock in slow_headers:
        sock.sendall(b"GET /files HTTP/1.1\r\nHost: api\r\nX-Slow: ")
    upload_head = (
        b"POST /files/upload HTTP/1.1\r\nHost: api\r\nContent-Length: 1000000\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n"
    )
    for sock in slow_bodies:
        sock.sendall(upload_head)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1):
            for sock in slow_headers:
                with contextlib.suppress(OSError):  # cut already
                    sock.send(b"a")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    probes: list[int] = []
    try:
        while time.monotonic() - started < PROXY_TIMEOUT + 3:
            probes.append(proxy.request("GET", "/files?limit=1")[0])
            probes.append(proxy.request("GET", "/")[0])
            time.sleep(0.2)
        everyone = [*slow_headers, *slow_bodies]
        cut = eventually(lambda: all(_closed(s) for s in everyone), timeout=PROXY_TIMEOUT)
        open_after = sum(not _closed(s) for s in everyone)
    finally:
        stop.set()
        trickler.join(5)
        for sock in [*slow_headers, *slow_bodies]:
            sock.close()
    assert len(probes) >= 30 and set(probes) == {200}, probes
    assert cut, f"{open_after} slow sockets still open {PROXY_TIMEOUT * 2 + 3} s on"


def test_the_client_ip_reaches_the_rate_limiter_through_the_proxy(proxy):
    """Uploads are limited to 5 a minute per client: the sixth from one address is refused,
    also when it claims another address in X-Forwarded-For; another address is served."""
    first, second = loopback_address(), loopback_address()
    body = multipart.file_body("a.txt", b"through the proxy")
    headers = {"Content-Type": multipart.CONTENT_TYPE}

    def upload(source: str, extra: dict | None = None) -> int:
        return proxy.request(
            "POST", "/files/upload", source=source, body=body, headers=headers | (extra or {})
        )[0]

    assert [upload(first) for _ in range(5)] == [201] * 5
    assert upload(first) == 429
    assert upload(first, {"X-Forwarded-For": second}) == 429
    assert upload(second) == 201


def test_the_proxy_answers_its_own_refusals_in_the_error_shape(proxy):
    status, headers, body = proxy.request(
        "POST",
        "/files/upload",
        body=b"",
        headers={"Content-Length": str(40 * 1024 * 1024), "Content-Type": "multipart/form-data"},
    )
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {
        "error": "Файл слишком большой",
        "code": "FILE_TOO_LARGE",
        "max_size_mb": 16,
    }
    status, _, body = proxy.request("GET", "/metrics")
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"
    proxy.api.stop()
    status, headers, body = proxy.request("GET", "/files")
    assert status == 502 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["code"] == "SERVICE_UNAVAILABLE"


def test_live_status_passes_through_the_proxy(clean_stack, tmp_path):
    """SSE unbuffered and WebSocket upgraded, both at the API's own address."""
    settings = replace(clean_stack.settings, v1_access="token")
    api = start_gunicorn(settings, tmp_path / "gunicorn.log", TRUSTED_PROXY_COUNT="1")
    live = start_realtime(settings, tmp_path / "realtime.log")
    port = free_port()
    nginx = start_nginx(
        tmp_path, port, api.url.removeprefix("http://"), live.url.removeprefix("http://")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        where = requests.get(base + "/api/v2").json()
        assert where["events_url"] == base + "/api/v2/events"
        assert where["ws_url"] == f"ws://127.0.0.1:{port}/api/v2/ws"
        alice = account(base, "alice")
        socket_ = WsClient(where["ws_url"], alice.auth)
        stream = SseClient(where["events_url"], alice.auth)
        assert stream.status == 200 and socket_.next()["type"] == "ready"
        name = alice.upload(data=b"through the proxy\n", name="proxied.txt")
        for client in (socket_, stream):
            events = collect(client, lambda e: e["type"] == "file.stored", timeout=30)
            assert [e["type"] for e in events if e["file"]["name"] == name][:3] == [
                "file.pending",
                "file.processing",
                "file.stored",
            ]
        socket_.close()
        stream.close()
    finally:
        nginx.terminate()
        nginx.wait(10)
        live.stop()
        api.stop()


def test_a_direct_upload_passes_through_the_proxy(proxy, clean_stack):
    """A part of UPLOAD_PART_MB (8 MiB) is PUT through the proxy to its signed URL (the API's,
    or on S3 the store's)."""
    base = f"http://{proxy.host}:{proxy.port}"
    alice = account(base, "alice")
    data = b"direct through the proxy\n" * (9 * 1024 * 1024 // 25)
    created = alice.post("/api/v2/uploads", json={"filename": "d.txt", "size": len(data)})
    assert created.status_code == 201, created.text
    parts = created.json()["parts"]
    assert [p["size"] for p in parts] == [8 * 1024 * 1024, len(data) - 8 * 1024 * 1024]
    for part in parts:
        assert part["url"].startswith(base)  # the address the client used
        start = (part["part_number"] - 1) * 8 * 1024 * 1024
        body = data[start : start + part["size"]]
        sent = requests.put(part["url"], data=body, headers=part["headers"], timeout=30)
        assert sent.status_code == 200, sent.text
    done = alice.post(f"/api/v2/uploads/{created.json()['upload_id']}/complete")
    assert done.status_code == 202, done.text

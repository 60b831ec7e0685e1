"""Rate limits on real Redis: bursts, uploads, shared budgets across processes, proxies, outages."""

from __future__ import annotations

import io
import subprocess
import time
from dataclasses import replace

import pytest
import redis
import requests

from api import create_app
from tests.conftest import close_app, eventually, free_port, start_gunicorn


@pytest.fixture
def limited(clean_stack):
    """Settings with limits switched on, and no limiter keys left in Redis. The budgets are the
    shipped ones (20 in a burst, 100 sustained) over windows of minutes instead of seconds: a
    loaded machine can take over a second for a test's burst, and a window that rolls over
    mid-burst would grant more. Windows of seconds are tested on their own, below."""
    client = redis.Redis.from_url(clean_stack.settings.redis_url)
    for key in client.scan_iter("*ratelimit/*"):
        client.delete(key)
    return replace(
        clean_stack.settings, ratelimit_enabled=True, ratelimit_default="20/minute;100/10 minutes"
    )


@pytest.fixture
def make_client(limited):
    apps = []

    def build(**overrides):
        app = create_app(replace(limited, **overrides))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        close_app(app)


def test_burst_of_twenty_then_429_with_headers(make_client):
    client = make_client()
    replies = [client.get("/users") for _ in range(25)]
    statuses = [reply.status_code for reply in replies]
    assert statuses[:20] == [200] * 20
    # The limits' headers come with a refusal only (api/limits.py).
    names = [name for name, _value in replies[0].headers]
    assert not any(name.startswith(("X-RateLimit", "Retry-After")) for name in names)
    assert set(statuses[20:]) == {429}
    reply = client.get("/users")
    body = reply.get_json()
    assert reply.status_code == 429
    assert body["code"] == "RATE_LIMITED" and body["error"] == "Превышен лимит запросов"
    assert int(reply.headers["Retry-After"]) >= 0
    assert reply.headers["X-RateLimit-Limit"] == "20"
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in reply.headers


def test_longer_window_caps_the_sustained_rate(make_client):
    # Windows of two and ten seconds: a loaded machine may take a second for a round.
    client = make_client(ratelimit_default="20/2 seconds;30/10 seconds")
    granted = []
    for _ in range(3):  # rounds 2.1 s apart: each has a fresh 2-second window
        granted.append(sum(client.get("/users").status_code == 200 for _ in range(15)))
        time.sleep(2.1)
    assert granted == [15, 15, 0]


def test_root_and_health_are_exempt(make_client):
    client = make_client()
    assert all(client.get("/").status_code == 200 for _ in range(40))
    assert all(client.get("/health/storage").status_code == 200 for _ in range(25))


def test_uploads_are_limited_to_five_a_minute(make_client):
    client = make_client()

    def upload():
        return client.post(
            "/files/upload",
            data={"file": (io.BytesIO(b"x"), "a.txt")},
            content_type="multipart/form-data",
        )

    statuses = [upload().status_code for _ in range(6)]
    assert statuses == [201] * 5 + [429]
    assert client.get("/users").status_code == 200  # the general budget is not spent


def test_general_budget_is_shared_across_routes(make_client):
    client = make_client()
    statuses = [client.get("/users").status_code for _ in range(10)]
    statuses += [client.get("/files").status_code for _ in range(15)]
    assert statuses.count(200) == 20 and statuses[-1] == 429


def test_forwarded_for_is_ignored_unless_trusted(make_client):
    untrusted = make_client()
    for i in range(20):
        untrusted.get("/users", headers={"X-Forwarded-For": f"127.0.1.{i}"})
    assert untrusted.get("/users", headers={"X-Forwarded-For": "127.0.2.1"}).status_code == 429

    trusted = make_client(trusted_proxy_count=1)
    for _ in range(20):
        trusted.get("/users", headers={"X-Forwarded-For": "127.0.3.1"})
    assert trusted.get("/users", headers={"X-Forwarded-For": "127.0.3.1"}).status_code == 429
    assert trusted.get("/users", headers={"X-Forwarded-For": "127.0.3.2"}).status_code == 200


def test_two_api_processes_share_one_budget(limited, tmp_path):
    servers = [start_gunicorn(limited, tmp_path / f"{name}.log") for name in ("a", "b")]
    try:
        first, second = (server.url for server in servers)
        statuses = [requests.get(f"{first}/users", timeout=5).status_code for _ in range(12)]
        statuses += [requests.get(f"{second}/users", timeout=5).status_code for _ in range(12)]
        assert statuses.count(200) == 20
        assert statuses[-4:] == [429] * 4
    finally:
        for server in servers:
            server.stop()


def test_requests_are_answered_when_redis_stops(limited, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        assert eventually(lambda: _redis_up(port), timeout=10)
        app = create_app(replace(limited, redis_url=f"redis://127.0.0.1:{port}/0"))
        client = app.test_client()
        assert client.get("/users").status_code == 200
        server.terminate()
        server.wait(10)
        started = time.monotonic()
        statuses = [client.get("/users").status_code for _ in range(10)]
        assert statuses == [200] * 10
        assert time.monotonic() - started < 3
        statuses = [client.get("/users").status_code for _ in range(15)]
        assert 429 in statuses  # the in-memory fallback still limits
        close_app(app)
    finally:
        if server.poll() is None:
            server.kill()


def _redis_up(port):
    try:
        return redis.Redis(port=port, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False


def test_unmatched_paths_and_wrong_methods_count_against_the_client(make_client):
    client = make_client(ratelimit_default="6/minute")
    statuses = [client.get("/no-such-route").status_code for _ in range(3)]
    statuses += [client.open("/users", method="PUT").status_code for _ in range(3)]
    assert statuses == [404, 404, 404, 405, 405, 405]
    assert client.get("/users").status_code == 429
    assert client.get("/another-miss").status_code == 429


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("2001:db8:1:2::10", "2001:db8:1:2:ffff::99", True),  # one /64: one client
        ("2001:db8:1:2::10", "2001:db8:1:3::10", False),  # another /64
        ("::ffff:203.0.113.7", "203.0.113.7", True),  # IPv4-mapped is the IPv4 address
    ],
)
def test_ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_by_the_ipv4(
    make_client, first, second, shared
):
    client = make_client(ratelimit_default="3/minute")
    for _ in range(3):
        assert client.get("/users", environ_base={"REMOTE_ADDR": first}).status_code == 200
    refused = client.get("/users", environ_base={"REMOTE_ADDR": second}).status_code == 429
    assert refused == shared

"""The token life cycle, API keys and scopes, hostile tokens and login limits, over HTTP against
gunicorn on both databases."""

from __future__ import annotations

import base64
import json
import statistics
import time
import warnings

import jwt
import requests
from sqlalchemy import func, select, update

from api.services import services
from common.models import ApiKey, File, User
from testkit.processes import SHIPPED_PASSWORD_HASHES
from testkit.services import RedisServer
from tests.accounts import (
    PASSWORD,
    account,
    log_in,
    make_admin,
    register,
    start_api,
    token_settings,
)


def _refresh(url: str, refresh_token: str) -> requests.Response:
    return requests.post(
        url + "/api/v2/auth/refresh", headers={"Authorization": f"Bearer {refresh_token}"}
    )


def _invalid_token(reply: requests.Response) -> str:
    """The reply is RFC 6750's 401 for a bad token; its description."""
    assert reply.status_code == 401, reply.text
    assert reply.json()["code"] == "UNAUTHORIZED"
    challenge = reply.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    return reply.json()["details"]


def test_registration_and_login(token_api, clean_stack):
    created = register(token_api, "Alice")
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "username", "email", "is_admin", "created_at"}
    assert "password" not in created.text and "argon2" not in created.text
    with clean_stack.db.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.id == body["id"]))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    again = register(token_api, "ALICE")
    assert again.status_code == 409 and again.json()["details"] == {"field": "username"}
    short = register(token_api, "bob", password="short")
    assert short.status_code == 400 and "password" in short.json()["details"]
    tokens = log_in(token_api, "alice")  # usernames compare case-folded
    assert tokens.status_code == 200 and tokens.headers["Cache-Control"] == "no-store"
    assert tokens.json()["token_type"] == "Bearer" and tokens.json()["expires_in"] == 900
    by_email = requests.post(
        token_api + "/api/v2/auth/token",
        json={"username": "alice@example.com", "password": PASSWORD},
    )
    assert by_email.status_code == 200
    me = requests.get(
        token_api + "/api/v2/me",
        headers={"Authorization": f"Bearer {tokens.json()['access_token']}"},
    ).json()
    assert me["username"] == "Alice" and me["usage"]["files"] == 0


def test_wrong_password_and_unknown_user_get_the_same_answer(clean_stack, tmp_path):
    # Hashes at the shipped cost: what makes the two answers take as long is the hash.
    server = start_api(token_settings(clean_stack.settings), tmp_path, **SHIPPED_PASSWORD_HASHES)
    try:
        _same_answer_and_time(server.url)
    finally:
        server.stop()


def _same_answer_and_time(url: str) -> None:
    account(url, "alice")
    wrong = log_in(url, "alice", "not the password")
    unknown = log_in(url, "nobody", "not the password")
    for reply in (wrong, unknown):
        assert reply.status_code == 401
        assert reply.json() == {
            "error": "Неверное имя пользователя или пароль",
            "code": "INVALID_CREDENTIALS",
        }
    # About the same time: an unknown user is checked against a dummy argon2 hash.
    timings = {"wrong": [], "unknown": []}
    for _ in range(5):
        for kind, name in (("wrong", "alice"), ("unknown", "nobody")):
            started = time.perf_counter()
            log_in(url, name, "not the password")
            timings[kind].append(time.perf_counter() - started)
    wrong_median = statistics.median(timings["wrong"])
    unknown_median = statistics.median(timings["unknown"])
    assert wrong_median > 0.1, timings  # the shipped cost: a fifth of a second of argon2
    assert unknown_median > 0.5 * wrong_median, timings


def test_access_tokens_expire(clean_stack, tmp_path):
    server = start_api(token_settings(clean_stack.settings, jwt_access_ttl=2), tmp_path)
    try:
        alice = account(server.url, "alice")
        assert alice.get("/api/v2/me").status_code == 200
        time.sleep(3)
        assert "expired" in _invalid_token(alice.get("/api/v2/me"))
        # The refresh token still gives a fresh pair.
        renewed = _refresh(server.url, alice.tokens["refresh_token"])
        assert renewed.status_code == 200
        alice.tokens = renewed.json()
        assert alice.get("/api/v2/me").status_code == 200
    finally:
        server.stop()


def test_refresh_rotates(token_api):
    alice = account(token_api, "alice")
    first = alice.tokens
    second = _refresh(token_api, first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    third = _refresh(token_api, second.json()["refresh_token"])
    assert third.status_code == 200
    # In the body, as OAuth clients send it, works as well.
    fourth = requests.post(
        token_api + "/api/v2/auth/refresh",
        json={"refresh_token": third.json()["refresh_token"]},
    )
    assert fourth.status_code == 200
    alice.tokens = fourth.json()
    assert alice.get("/api/v2/me").status_code == 200


def test_a_reused_refresh_token_ends_its_whole_login(token_api):
    """RFC 9700 4.14.2: a rotated refresh token presented again means two holders; the
    login ends for both, the newest pair included, and other logins go on."""
    alice = account(token_api, "alice")
    other = log_in(token_api, "alice").json()
    stolen = alice.tokens["refresh_token"]
    renewed = _refresh(token_api, stolen)
    assert renewed.status_code == 200
    alice.tokens = renewed.json()
    _invalid_token(_refresh(token_api, stolen))
    assert alice.get("/api/v2/me").status_code == 401
    _invalid_token(_refresh(token_api, alice.tokens["refresh_token"]))
    me = requests.get(
        token_api + "/api/v2/me", headers={"Authorization": f"Bearer {other['access_token']}"}
    )
    assert me.status_code == 200


def test_a_login_ends_after_session_max_age_however_it_is_refreshed(token_api, clean_stack):
    from datetime import UTC, datetime, timedelta

    from common.models import AuthSession

    alice = account(token_api, "alice")
    old = datetime.now(UTC) - timedelta(seconds=clean_stack.settings.session_max_age + 1)
    with clean_stack.db.session() as session:
        session.execute(update(AuthSession).values(created_at=old))
    assert alice.get("/api/v2/me").status_code == 401
    _invalid_token(_refresh(token_api, alice.tokens["refresh_token"]))


def test_a_demotion_holds_from_the_next_request_for_tokens_and_keys(token_api, clean_stack):
    from api import create_app

    root = make_admin(clean_stack.db, account(token_api, "root"))
    account(token_api, "bob")
    key = root.post("/api/v2/keys", json={"name": "k", "scopes": ["files:read"]}).json()["key"]
    by_key = {"Authorization": f"Bearer {key}"}
    everyone = {"owner": "bob"}
    assert root.get("/api/v2/files", params=everyone).status_code == 200
    assert requests.get(token_api + "/api/v2/files", params=everyone, headers=by_key).ok
    app = create_app(clean_stack.settings)
    demoted = app.test_cli_runner().invoke(args=["users", "make-admin", "root", "--revoke"])
    services(app).close()
    assert demoted.exit_code == 0, demoted.output
    assert root.get("/api/v2/files", params=everyone).status_code == 403
    forbidden = requests.get(token_api + "/api/v2/files", params=everyone, headers=by_key)
    assert forbidden.status_code == 403
    assert root.get("/api/v2/me").json()["is_admin"] is False


def test_a_refresh_token_is_not_an_access_token(token_api):
    alice = account(token_api, "alice")
    as_access = requests.get(
        token_api + "/api/v2/me",
        headers={"Authorization": f"Bearer {alice.tokens['refresh_token']}"},
    )
    assert "access" in _invalid_token(as_access)
    assert "refresh" in _invalid_token(_refresh(token_api, alice.tokens["access_token"]))


def test_log_out_revokes_access_and_refresh(token_api):
    alice = account(token_api, "alice")
    other_login = log_in(token_api, "alice").json()
    assert alice.get("/api/v2/me").status_code == 200
    assert alice.delete("/api/v2/auth/token").status_code == 204
    assert "revoked" in _invalid_token(alice.get("/api/v2/me"))
    _invalid_token(_refresh(token_api, alice.tokens["refresh_token"]))
    # Another login of the same user is another session: untouched.
    me = requests.get(
        token_api + "/api/v2/me",
        headers={"Authorization": f"Bearer {other_login['access_token']}"},
    )
    assert me.status_code == 200


def test_revocation_survives_a_redis_restart(clean_stack, tmp_path):
    redis_server = RedisServer()
    settings = token_settings(clean_stack.settings, redis_url=redis_server.url)
    server = start_api(settings, tmp_path)
    try:
        alice = account(server.url, "alice")
        kept = log_in(server.url, "alice").json()
        assert alice.get("/api/v2/me").status_code == 200  # "valid" is cached in Redis now
        assert alice.delete("/api/v2/auth/token").status_code == 204
        redis_server.stop()  # an empty Redis comes back: nothing cached survives
        redis_server.start()
        assert not redis_server_keys(redis_server)
        assert "revoked" in _invalid_token(alice.get("/api/v2/me"))
        _invalid_token(_refresh(server.url, alice.tokens["refresh_token"]))
        alice.tokens = kept
        assert alice.get("/api/v2/me").status_code == 200
        # While Redis is down the database answers alone.
        redis_server.stop()
        assert alice.get("/api/v2/me").status_code == 200
        assert alice.delete("/api/v2/auth/token").status_code == 204
        assert "revoked" in _invalid_token(alice.get("/api/v2/me"))
    finally:
        server.stop()
        redis_server.stop()


def redis_server_keys(redis_server: RedisServer) -> list:
    import redis

    return redis.Redis.from_url(redis_server.url).keys("*")


def test_api_keys_scopes_and_revocation(token_api, clean_stack):
    alice = account(token_api, "alice")
    made = alice.post("/api/v2/keys", json={"name": "reader", "scopes": ["files:read"]})
    assert made.status_code == 201
    reader = made.json()
    key = reader.pop("key")
    assert key.startswith("upk_") and len(key) >= 4 + 43
    assert reader["prefix"] == key[:12] and reader["scopes"] == ["files:read"]
    with clean_stack.db.session() as session:
        stored = session.scalars(select(ApiKey)).one()
    assert key not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
    as_key = {"Authorization": f"Bearer {key}"}
    name = alice.upload()
    assert requests.get(token_api + "/api/v2/files", headers=as_key).status_code == 200
    assert requests.get(f"{token_api}/api/v2/files/{name}", headers=as_key).status_code == 200
    assert requests.get(token_api + "/files", headers=as_key).status_code == 200
    for refused in (
        requests.post(token_api + "/api/v2/files", headers=as_key, files={"file": ("b.txt", b"x")}),
        requests.post(token_api + "/files/upload", headers=as_key, files={"file": ("b.txt", b"x")}),
        requests.delete(f"{token_api}/api/v2/files/{name}", headers=as_key),
        requests.get(token_api + "/api/v2/keys", headers=as_key),  # keys need a password login
    ):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "INSUFFICIENT_SCOPE"
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    with clean_stack.db.session() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 1
    assert alice.get(f"/api/v2/files/{name}").status_code == 200
    listed = alice.get("/api/v2/keys").json()["items"]
    assert [k["name"] for k in listed] == ["reader"] and listed[0]["last_used_at"] is not None
    assert key not in alice.get("/api/v2/keys").text
    writer = alice.post("/api/v2/keys", json={"name": "writer", "scopes": ["files:write"]}).json()
    as_writer = {"Authorization": f"Bearer {writer['key']}"}
    posted = requests.post(
        token_api + "/api/v2/files", headers=as_writer, files={"file": ("w.txt", b"w")}
    )
    assert posted.status_code == 201 and posted.json()["owner"] == "alice"
    assert requests.get(token_api + "/api/v2/files", headers=as_writer).status_code == 403
    # A revoked key is refused from the very next request (its answer was cached just now).
    assert alice.delete(f"/api/v2/keys/{reader['id']}").status_code == 204
    assert "revoked" in _invalid_token(requests.get(token_api + "/api/v2/files", headers=as_key))
    assert alice.delete(f"/api/v2/keys/{reader['id']}").status_code == 404
    bob = account(token_api, "bob")
    assert bob.delete(f"/api/v2/keys/{writer['id']}").json()["code"] == "KEY_NOT_FOUND"
    bad = alice.post("/api/v2/keys", json={"name": "x", "scopes": ["admin"]})
    assert bad.status_code == 400


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs512(claims: dict, secret: str) -> str:
    with warnings.catch_warnings():  # the key is short for HS512: that is the point
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, "HS512")


def test_hostile_tokens_are_refused_never_500(token_api, clean_stack):
    alice = account(token_api, "alice")
    good = alice.tokens["access_token"]
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    secret = "test-secret-key-of-at-least-32-bytes"  # the stack's SECRET_KEY (JWT_SECRET_KEY unset)
    forged_admin = claims | {"adm": True, "sub": "999"}
    hostile = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong key": jwt.encode(claims, "another-key-of-at-least-32-bytes-long!", "HS256"),
        "tampered payload": f"{header}.{_b64(forged_admin)}.{signature}",
        "truncated": good[: len(good) // 2],
        "expired": jwt.encode(claims | {"exp": int(time.time()) - 60}, secret, "HS256"),
        "100 KB": "a" * 100_000,
        "garbage": "not-a-jwt",
        "empty segments": "..",
        "HS512 with the key": _hs512(claims, secret),
        "unknown key": "upk_" + "A" * 43,
    }
    for label, token in hostile.items():
        reply = requests.get(
            token_api + "/api/v2/files", headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status_code == 401, (label, reply.status_code, reply.text[:200])
        assert reply.json()["code"] == "UNAUTHORIZED", label
    for malformed in ("Bearer", "Basic YWxpY2U6cGFzcw==", f"Bearer {good} extra", "Token abc"):
        reply = requests.get(token_api + "/api/v2/files", headers={"Authorization": malformed})
        assert reply.status_code == 401 and reply.json()["code"] == "UNAUTHORIZED", malformed
    assert alice.get("/api/v2/files").status_code == 200
    # NUL and other control characters (PostgreSQL refuses NUL in text): 400 or 401, never 500.
    for reply in (
        requests.post(
            token_api + "/api/v2/auth/token", json={"username": "a\x00", "password": "x"}
        ),
        alice.post("/api/v2/keys", json={"name": "a\x00b"}),
        alice.get("/api/v2/files", params={"owner": "a\x00"}),
        alice.get("/api/v2/files", params={"cursor": "a\x00"}),
        requests.get(token_api + "/api/v2/files", headers={"Authorization": "Bearer upk_\x01"}),
    ):
        assert reply.status_code in (400, 401), reply.text


def test_login_is_rate_limited_per_address_and_per_username(clean_stack, tmp_path):
    redis_server = RedisServer()  # budgets of its own, untouched by the other stack's run
    settings = token_settings(
        clean_stack.settings,
        redis_url=redis_server.url,
        ratelimit_enabled=True,
        ratelimit_login="3/minute",
        trusted_proxy_count=1,  # X-Forwarded-For names the client: several addresses, one host
    )
    server = start_api(settings, tmp_path)

    def attempt(username: str, address: str) -> int:
        return requests.post(
            server.url + "/api/v2/auth/token",
            json={"username": username, "password": "wrong password"},
            headers={"X-Forwarded-For": address},
        ).status_code

    try:
        assert [attempt("alice", "198.51.100.1") for _ in range(3)] == [401] * 3
        assert attempt("alice", "198.51.100.2") == 429  # alice's budget, from anywhere
        assert attempt("bob", "198.51.100.2") == 401
        assert [attempt(f"user{i}", "198.51.100.3") for i in range(3)] == [401] * 3
        assert attempt("carol", "198.51.100.3") == 429  # this address's budget
        assert attempt("carol", "198.51.100.4") == 401
        # One budget per account, however it is named: username, email, or email beside a
        # null username.
        assert register(server.url, "dave").status_code == 201
        logins = [
            {"username": "dave"},
            {"email": "dave@example.com"},
            {"username": None, "email": "DAVE@example.com"},
            {"username": "dave@example.com"},
        ]
        codes = [
            requests.post(
                server.url + "/api/v2/auth/token",
                json=login | {"password": "wrong password"},
                headers={"X-Forwarded-For": f"198.51.100.{10 + i}"},
            ).status_code
            for i, login in enumerate(logins)
        ]
        assert codes == [401, 401, 401, 429]
        # Guesses from everywhere cannot lock the owner out: an address that logged in to the
        # account before is not held to the account's budget (a fresh one is).
        assert register(server.url, "erin").status_code == 201
        home = {"X-Forwarded-For": "203.0.113.7"}
        owner = {"username": "erin", "password": PASSWORD}
        assert requests.post(server.url + "/api/v2/auth/token", json=owner, headers=home).ok
        guesses = [attempt("erin", f"198.51.100.{100 + i}") for i in range(11)]
        assert guesses[:2] == [401] * 2 and set(guesses[2:]) == {429}  # the log-in counted
        fresh = {"X-Forwarded-For": "198.51.100.200"}
        locked = requests.post(server.url + "/api/v2/auth/token", json=owner, headers=fresh)
        assert locked.status_code == 429
        again = requests.post(server.url + "/api/v2/auth/token", json=owner, headers=home)
        assert again.status_code == 200, again.text
    finally:
        server.stop()
        redis_server.stop()


def test_closed_registration_is_for_admins(clean_stack, token_api, tmp_path):
    alice = account(token_api, "alice")
    root = make_admin(clean_stack.db, account(token_api, "root"))
    closed = start_api(token_settings(clean_stack.settings, registration="closed"), tmp_path)
    try:
        alice.url = root.url = closed.url
        assert register(closed.url, "mallory").status_code == 401
        new = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
        refused = alice.post("/api/v2/users", json=new)
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
        reader = root.post("/api/v2/keys", json={"name": "reader", "scopes": ["files:read"]})
        by_key = requests.post(
            closed.url + "/api/v2/users",
            json=new,
            headers={"Authorization": f"Bearer {reader.json()['key']}"},
        )
        assert by_key.status_code == 403 and by_key.json()["code"] == "INSUFFICIENT_SCOPE"
        assert root.post("/api/v2/users", json=new).status_code == 201
        assert log_in(closed.url, "carol").status_code == 200
    finally:
        closed.stop()


def test_registration_refuses_taken_names_before_hashing_and_bounds_password_work(
    clean_stack, token_api, tmp_path
):
    """With no slot for password work (ARGON2_CONCURRENCY=0), a registration of a taken name
    still answers 409 (it is refused before any hashing); a new one, and a log-in, 503 BUSY
    with Retry-After at once."""
    assert register(token_api, "alice").status_code == 201
    busy = start_api(token_settings(clean_stack.settings), tmp_path, ARGON2_CONCURRENCY="0")
    try:
        taken = register(busy.url, "ALICE")
        assert taken.status_code == 409 and taken.json()["details"] == {"field": "username"}
        for reply in (register(busy.url, "bob"), log_in(busy.url, "alice")):
            assert reply.status_code == 503, reply.text
            assert reply.json()["code"] == "BUSY" and reply.headers["Retry-After"] == "1"
    finally:
        busy.stop()


def test_registrations_have_a_limit_of_their_own(clean_stack, tmp_path):
    redis_server = RedisServer()
    settings = token_settings(
        clean_stack.settings,
        redis_url=redis_server.url,
        ratelimit_enabled=True,
        ratelimit_register="2/minute",
    )
    server = start_api(settings, tmp_path)
    try:
        codes = [register(server.url, f"user{i}").status_code for i in range(3)]
        assert codes == [201, 201, 429]
        assert log_in(server.url, "user0").status_code == 200  # log-ins are not registrations
    finally:
        server.stop()
        redis_server.stop()


def test_the_pages_session_keeps_its_refresh_token_in_a_cookie_scripts_cannot_read(token_api):
    """``?session=cookie``: the refresh token only in an HttpOnly, SameSite=Strict cookie for the
    refresh route; a refresh by it needs the CSRF header; log-out clears both cookies."""
    assert register(token_api, "cookie").status_code == 201
    browser = requests.Session()
    login = {"username": "cookie", "password": PASSWORD}
    signed_in = browser.post(token_api + "/api/v2/auth/token?session=cookie", json=login)
    assert signed_in.status_code == 200 and signed_in.json()["refresh_token"] is None
    cookies = {c.name: c for c in browser.cookies}
    refresh_cookie = cookies["upl_refresh"]
    assert refresh_cookie.path == "/api/v2/auth/refresh" and not refresh_cookie.secure
    assert refresh_cookie.has_nonstandard_attr("HttpOnly")
    assert refresh_cookie.get_nonstandard_attr("SameSite") == "Strict"
    assert not cookies["upl_csrf"].has_nonstandard_attr("HttpOnly")  # the page reads it
    # Without the header (a form of another site would send none): refused, nothing rotated.
    refused = browser.post(token_api + "/api/v2/auth/refresh")
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    wrong = browser.post(token_api + "/api/v2/auth/refresh", headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    csrf = {"X-CSRF-Token": browser.cookies["upl_csrf"]}
    refreshed = browser.post(token_api + "/api/v2/auth/refresh", headers=csrf)
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] is None
    assert browser.cookies["upl_refresh"] != refresh_cookie.value  # rotated
    access = refreshed.json()["access_token"]
    me = browser.get(token_api + "/api/v2/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200 and me.json()["username"] == "cookie"
    out = browser.delete(
        token_api + "/api/v2/auth/token", headers={"Authorization": f"Bearer {access}"}
    )
    assert out.status_code == 204 and "upl_refresh" not in browser.cookies
    csrf = {"X-CSRF-Token": browser.cookies.get("upl_csrf", "")}
    assert browser.post(token_api + "/api/v2/auth/refresh", headers=csrf).status_code == 401

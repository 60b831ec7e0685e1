"""Faults as they really happen: dependencies that go silent, a broker that comes back empty,
outages longer than the retries, damaged staged copies, deletes while the store is down.
(A silent database: tests/faults/test_faults.py, beside the refused one.)"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import replace

import pytest
import redis

from api.services import services
from common.db import Database
from common.queue import SENTINEL
from testkit import multipart
from testkit.tcpproxy import TcpProxy
from tests.conftest import eventually, wait_for_status
from tests.faults.test_faults import database_behind_a_proxy, objects, staged, upload


def test_a_silent_redis_still_answers_uploads_within_three_seconds(fault_env):
    env = fault_env
    line = TcpProxy(env.redis.port)
    try:
        client = env.app(redis_url=f"redis://127.0.0.1:{line.port}/0").test_client()
        assert upload(client, b"before").status_code == 201  # the publisher is connected
        line.silence()
        names = []
        for i in range(3):
            started = time.monotonic()
            reply = upload(client, f"while redis is silent {i}".encode())
            assert time.monotonic() - started < 3
            assert reply.status_code == 201 and reply.get_json()["status"] == "pending"
            names.append(reply.get_json()["filename"])
        env.worker()
        env.beat()  # on the direct line: the reconciler publishes what the API could not
        for name in names:
            wait_for_status(env.db, name, {"stored"}, timeout=60)
    finally:
        line.close()


def test_a_silent_store_is_unhealthy_within_three_seconds_and_pushes_retry(fault_env):
    env = fault_env
    worker = env.worker()
    client = env.app().test_client()
    env.proxy.silence()
    started = time.monotonic()
    health = client.get("/health/storage")
    assert health.status_code == 503 and time.monotonic() - started < 3
    name = upload(client, b"pushed into silence").get_json()["filename"]
    assert eventually(lambda: "will retry" in worker.log.read_text(), timeout=30)
    env.proxy.up()
    wait_for_status(env.db, name, {"stored"}, timeout=60)
    assert objects(env) == [name]


@pytest.mark.parametrize("shipped_fault_env", ["sqlite", "postgres"], indirect=True)
def test_a_broker_that_comes_back_empty_gets_its_work_again_with_shipped_settings(
    shipped_fault_env,
):
    """Tasks queued in Redis, then Redis restarted without its data: the outbox entries look
    published, and OUTBOX_STALE_AFTER is an hour. The reconciler sees the sentinel gone."""
    env = shipped_fault_env
    app = env.app()
    client = app.test_client()
    redis.Redis.from_url(env.settings.redis_url).set(SENTINEL, 1)  # a broker in service
    names = [upload(client, f"queued {i}".encode()).get_json()["filename"] for i in range(4)]
    services(app).pipeline.marks.flush()
    assert redis.Redis.from_url(env.settings.redis_url).llen("uploads") == 4
    env.redis.stop()
    env.redis.start()  # empty
    emptied = time.monotonic()
    env.worker()
    env.beat()
    for name in names:
        wait_for_status(
            env.db, name, {"stored"}, timeout=max(1, 120 - (time.monotonic() - emptied))
        )
    assert sorted(objects(env)) == sorted(names)


@pytest.mark.slow
def test_a_database_outage_longer_than_the_retries_ends_stored_soon_after(fault_env):
    """The database is gone for longer than every store retry together: the workers cannot
    even record a failure. They wait it out; once it is back every file is stored."""
    env = fault_env
    with database_behind_a_proxy(env) as (url, direct_url, proxy):
        env.settings = replace(env.settings, database_url=url)
        client = env.app().test_client()
        names = [upload(client, f"file {i}".encode()).get_json()["filename"] for i in range(3)]
        proxy.down()
        worker = env.worker()
        env.beat()
        # Down for longer than every store retry together: each upload's task has been
        # retried more times than INGEST_MAX_RETRIES while the database was away.
        beyond = env.settings.ingest_max_retries + 1

        def retries_spent() -> bool:
            tries = Counter(
                re.findall(r"ingest\[(\S+)\] database unavailable", worker.log.read_text())
            )
            return sum(1 for count in tries.values() if count > beyond) >= len(names)

        assert eventually(retries_spent, timeout=90)
        proxy.up()
        back = time.monotonic()
        direct = Database(direct_url)
        try:
            for name in names:
                remaining = 120 - (time.monotonic() - back)
                wait_for_status(direct, name, {"stored"}, timeout=max(1, remaining))
        finally:
            direct.dispose()
        assert sorted(objects(env)) == sorted(names)


@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)
def test_a_delete_while_the_store_is_down_removes_the_object_once_it_is_back(fault_env):
    env = fault_env
    env.worker()
    client = env.app().test_client()
    name = upload(client, b"to be deleted").get_json()["filename"]
    wait_for_status(env.db, name, {"stored"}, timeout=30)
    env.s3.stop()
    reply = client.delete(f"/files/{name}")
    assert reply.status_code == 200
    assert client.get(f"/files/{name}/info").status_code == 404
    env.s3.start()  # moto keeps its objects across a restart: the object is still there
    assert eventually(lambda: objects(env) == [], timeout=60)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: path.write_bytes(b"flipped bits"), "повреждена"),
        (lambda path: path.unlink(), "утеряна"),
    ],
    ids=["corrupted", "vanished"],
)
def test_a_damaged_staged_copy_ends_failed_with_the_reason(fault_env, damage, reason):
    env = fault_env
    client = env.app().test_client()
    name = upload(client, b"accepted intact").get_json()["filename"]
    damage(staged(env, name))
    env.worker()
    file = wait_for_status(env.db, name, {"failed"}, timeout=30)
    assert reason in file.error
    assert objects(env) == []


def test_prefer_wait_running_out_answers_pending(fault_env):
    env = fault_env  # no worker: the file cannot be finished in time
    client = env.app().test_client()
    body = multipart.file_body("a.txt", b"waited for")
    started = time.monotonic()
    reply = client.post(
        "/files/upload",
        data=body,
        content_type=multipart.CONTENT_TYPE,
        headers={"Prefer": "wait=2"},
    )
    waited = time.monotonic() - started
    assert reply.status_code == 201 and reply.get_json()["status"] == "pending"
    assert "Preference-Applied" not in reply.headers
    assert 2 <= waited < 4


@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)
def test_a_bulk_delete_while_the_store_is_down_loses_nothing(fault_env):
    """The request only records the deletes; the workers remove the objects, retrying until
    the store is back."""
    env = fault_env
    env.worker()
    client = env.app().test_client()
    account = {"username": "bulk", "email": "bulk@example.com", "password": "bulk password"}
    assert client.post("/api/v2/users", json=account).status_code == 201
    login = {"username": "bulk", "password": "bulk password"}
    token = client.post("/api/v2/auth/token", json=login).get_json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    names = []
    for i in range(20):
        body = multipart.file_body(f"f{i}.txt", f"file {i}".encode())
        reply = client.post(
            "/api/v2/files", data=body, content_type=multipart.CONTENT_TYPE, headers=auth
        )
        names.append(reply.get_json()["name"])
    for name in names:
        wait_for_status(env.db, name, {"stored"}, timeout=30)
    env.s3.stop()
    reply = client.post(
        "/api/v2/files/bulk", json={"action": "delete", "names": names}, headers=auth
    )
    assert reply.status_code == 200 and reply.get_json()["succeeded"] == 20
    assert client.get("/api/v2/files", headers=auth).get_json()["items"] == []
    env.s3.start()  # moto keeps its objects across a restart: they are all still there
    assert eventually(lambda: objects(env) == [], timeout=90)

"""SPEC §7's faults, injected for real: processes killed, servers stopped, lines cut."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from sqlalchemy import select

from api.services import services
from common.db import Database
from common.models import File, FileStatus
from common.queue import SENTINEL
from common.settings import Settings
from common.tasks import INGEST
from testkit import multipart
from testkit.processes import PG_PORT, PG_URL, eventually, free_port, migrate, wait_for_status
from testkit.tcpproxy import TcpProxy
from tests.pipelines import outbox_kinds

MIB = 1024 * 1024
#: Settings that place a fault environment (its own database, Redis, store, directories),
#: and open v1, whose routes the scenarios upload through.
LOCAL = ("database_url", "redis_url", "storage_backend", "s3_bucket", "s3_endpoint_url")
LOCAL += ("staging_dir", "storage_dir", "secret_key", "ratelimit_enabled", "v1_access")


def upload(client, data: bytes, name: str = "a.txt"):
    """POST a file as a prebuilt body (the test client's own encoder leaks a temp file)."""
    body = multipart.file_body(name, data)
    return client.post("/files/upload", data=body, content_type=multipart.CONTENT_TYPE)


def kill_tree(pid: int) -> None:
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs([parent], timeout=10)


def objects(env) -> list[str]:
    reply = env.direct_store()._client.list_objects_v2(Bucket=env.settings.s3_bucket)
    return [item["Key"] for item in reply.get("Contents", [])]


def staged(env, name: str) -> Path:
    return Path(env.settings.staging_dir, name)


def attempts_of(env, name: str) -> int:
    with env.db.session() as session:
        return session.scalar(select(File.attempts).where(File.name == name)) or 0


@pytest.mark.slow
def test_worker_killed_mid_push_is_taken_back_through_its_lease_with_shipped_settings(
    shipped_fault_env,
):
    """The whole worker (main process and pool) SIGKILLed mid-push, in a broker that has not
    lost its data: the task stays unacknowledged in Redis for VISIBILITY_TIMEOUT (an hour) and
    its entry counts as published for OUTBOX_STALE_AFTER, so only the lease brings the file
    back: it lapses, and beat's reconciler takes the file back (``reclaimed``) and hands it
    to another worker, within CLAIM_LEASE + RECONCILE_INTERVAL and the push itself."""
    env = shipped_fault_env
    settings = env.settings
    assert settings == Settings.from_env({}, **{k: getattr(settings, k) for k in LOCAL})
    redis.Redis.from_url(settings.redis_url).set(SENTINEL, 1)  # a broker in service
    env.proxy.bandwidth = 512 * 1024  # a 2 MiB push takes about 4 s
    first = env.worker("first", queues="uploads")
    client = env.app().test_client()
    data = b"%PDF-1.4\n" + os.urandom(2 * MIB)
    name = upload(client, data, "big.pdf").get_json()["filename"]
    wait_for_status(env.db, name, {"processing"})
    time.sleep(1.5)  # well inside the push
    kill_tree(first.process.pid)
    killed_at = time.monotonic()
    assert objects(env) == []
    env.proxy.bandwidth = None
    second = env.worker("second")
    env.beat()
    bound = settings.claim_lease + settings.reconcile_interval
    assert eventually(lambda: attempts_of(env, name) >= 2, timeout=bound + 10)
    picked_up_after = time.monotonic() - killed_at
    file = wait_for_status(env.db, name, {"stored"}, timeout=30)
    print(f"taken back {picked_up_after:.0f} s after the kill (bound {bound} s)")
    with env.db.session() as session:
        file_id = session.scalar(select(File.id).where(File.name == name))
    assert f"took back files whose worker stopped: [{file_id}]" in second.log.read_text()
    assert file.attempts == 2  # the killed delivery and the one after it, no more
    assert objects(env) == [name]
    assert env.direct_store().head(name).size == len(data)
    assert not staged(env, name).exists()


@pytest.mark.parametrize("shipped_fault_env", ["sqlite", "postgres"], indirect=True)
def test_pool_process_killed_mid_push_is_taken_over_at_once(shipped_fault_env):
    """Only the pool processes die (the OOM killer's way): the worker's main process puts the
    task back at once (reject_on_worker_lost), and the new delivery sees that the claim's
    holder is gone, so it does not wait for the lease."""
    env = shipped_fault_env
    env.proxy.bandwidth = 512 * 1024
    worker = env.worker("only", queues="uploads")
    client = env.app().test_client()
    data = b"%PDF-1.4\n" + os.urandom(2 * MIB)
    name = upload(client, data, "big.pdf").get_json()["filename"]
    wait_for_status(env.db, name, {"processing"})
    time.sleep(1.5)
    for child in psutil.Process(worker.process.pid).children(recursive=True):
        child.send_signal(signal.SIGKILL)
    env.proxy.bandwidth = None
    # Well inside CLAIM_LEASE (60 s): no beat runs here, so only the takeover can store it.
    file = wait_for_status(env.db, name, {"stored"}, timeout=30)
    assert file.attempts == 2
    assert objects(env) == [name]


@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)
def test_redis_down_uploads_still_accepted_then_stored(fault_env):
    env = fault_env
    env.worker()
    env.beat()
    client = env.app().test_client()
    env.redis.stop()
    names = []
    for i in range(5):
        started = time.monotonic()
        reply = upload(client, f"while redis is down {i}".encode())
        assert time.monotonic() - started < 3
        assert reply.status_code == 201 and reply.get_json()["status"] == "pending"
        names.append(reply.get_json()["filename"])
    env.redis.start()  # empty: the queue lost nothing only because the outbox kept it
    for name in names:
        wait_for_status(env.db, name, {"stored"}, timeout=90)
    assert sorted(objects(env)) == sorted(names)


@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)
def test_store_down_accepts_reports_unhealthy_and_stores_after_restart(fault_env):
    env = fault_env
    env.settings = replace(env.settings, ingest_max_retries=30)
    env.worker()
    client = env.app().test_client()
    env.s3.stop()
    started = time.monotonic()
    health = client.get("/health/storage")
    assert health.status_code == 503 and health.get_json()["status"] == "unhealthy"
    assert time.monotonic() - started < 3
    names = [upload(client, f"store down {i}".encode()).get_json()["filename"] for i in range(3)]
    time.sleep(3)
    with env.db.session() as session:
        states = {f.status for f in session.query(File).filter(File.name.in_(names))}
    assert states <= {FileStatus.PENDING, FileStatus.PROCESSING}
    env.s3.start()
    for name in names:
        wait_for_status(env.db, name, {"stored"}, timeout=60)
    assert client.get("/health/storage").status_code == 200
    assert sorted(objects(env)) == sorted(names)


def test_store_down_past_last_retry_fails_then_requeue_stores(fault_env):
    env = fault_env
    env.settings = replace(env.settings, ingest_max_retries=2, retry_backoff_max=1)
    env.worker()
    app = env.app()
    client = app.test_client()
    env.s3.stop()
    name = upload(client, b"unlucky").get_json()["filename"]
    file = wait_for_status(env.db, name, {"failed"}, timeout=60)
    assert "Хранилище недоступно" in file.error
    info = client.get(f"/files/{name}/info").get_json()
    assert info["status"] == "failed" and info["error"] == file.error
    assert staged(env, name).exists()
    env.s3.start()
    result = app.test_cli_runner().invoke(args=["requeue-failed", "--all"])
    assert result.exit_code == 0, result.output
    wait_for_status(env.db, name, {"stored"}, timeout=60)
    assert objects(env) == [name]


@contextmanager
def database_behind_a_proxy(env) -> Iterator[tuple[str, str, TcpProxy]]:
    """A fresh PostgreSQL database reached through a TCP proxy that can be cut; yields its URL
    through the proxy, its direct URL and the proxy. Afterwards the environment's processes and
    apps let go of it and it is dropped."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    proxy = TcpProxy(PG_PORT)
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{name}"
        migrate(url)
        yield url, PG_URL.rsplit("/", 1)[0] + "/" + name, proxy
    finally:
        for process in env.processes:
            process.stop()
        proxy.close()
        for app in env.apps:
            services(app).pipeline.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("cut", ["refused", "silent"])
def test_database_down_or_silent_is_503_within_five_seconds_and_leaves_nothing(fault_env, cut):
    """The database refuses connections, or its host dies without a word (connections open,
    nothing answered, nothing refused)."""
    env = fault_env
    with database_behind_a_proxy(env) as (url, _direct, proxy):
        client = env.app(database_url=url).test_client()
        assert client.get("/users").status_code == 200  # a pooled connection is open
        proxy.down() if cut == "refused" else proxy.silence()
        for call in (
            lambda: client.post("/users", json={"username": "lost", "email": "lost@example.com"}),
            lambda: upload(client, b"not accepted"),
            lambda: client.get("/files"),
        ):
            started = time.monotonic()
            reply = call()
            assert reply.status_code == 503, reply.get_data(as_text=True)
            assert reply.get_json()["code"] == "DATABASE_UNAVAILABLE"
            assert time.monotonic() - started < 5
        assert not any(Path(env.settings.staging_dir).glob("*"))
        proxy.up()
        assert eventually(lambda: client.get("/users").status_code == 200, timeout=20)
        assert client.get("/users").get_json() == []
        assert client.get("/files").get_json()["count"] == 0


def test_database_down_under_the_workers_retries_then_stores(fault_env):
    env = fault_env
    with database_behind_a_proxy(env) as (url, direct_url, proxy):
        env.settings = replace(env.settings, database_url=url)
        client = env.app().test_client()
        names = [upload(client, f"file {i}".encode()).get_json()["filename"] for i in range(3)]
        proxy.down()  # accepted and queued; now the workers find no database
        worker = env.worker()
        assert eventually(lambda: "will retry" in worker.log.read_text(), timeout=30)
        proxy.up()
        direct = Database(direct_url)
        try:
            for stored in names:
                wait_for_status(direct, stored, {"stored"}, timeout=60)
        finally:
            direct.dispose()
        assert sorted(objects(env)) == sorted(names)


@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)
def test_same_task_twice_and_racing_workers_store_once(fault_env):
    env = fault_env
    env.worker("one")
    env.worker("two")
    app = env.app()
    client = app.test_client()
    name = upload(client, b"duplicate " * 50_000, "dup.txt").get_json()["filename"]
    with env.db.session() as session:
        file_id = session.query(File.id).filter_by(name=name).scalar()
    publisher = services(app).pipeline.publisher
    for attempt in (1, 2, 3):  # duplicate deliveries, picked by both workers at once
        publisher.send(INGEST, file_id, attempt=attempt)
    file = wait_for_status(env.db, name, {"stored"}, timeout=30)
    logs = lambda: "".join(w.log.read_text() for w in env.processes)  # noqa: E731
    assert eventually(lambda: logs().count("succeeded") >= 4, timeout=30)  # all 4 deliveries
    again = wait_for_status(env.db, name, {"stored"})
    assert (again.etag, again.stored_at) == (file.etag, file.stored_at)
    assert objects(env) == [name]
    assert env.direct_store().head(name).size == 500_000


@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)
def test_delete_during_push_leaves_no_object(fault_env):
    env = fault_env
    # The line to the store takes the whole body at once and hands it on at 512 KiB/s: a front
    # proxy that buffers request bodies.
    env.proxy.bandwidth, env.proxy.buffering = 512 * 1024, True
    worker = env.worker()
    env.beat()  # publishes the second removal that follows a push given up on
    client = env.app().test_client()
    name = upload(client, b"%PDF-1.4\n" + os.urandom(2 * MIB), "doomed.pdf").get_json()["filename"]
    wait_for_status(env.db, name, {"processing"})
    time.sleep(1)
    reply = client.delete(f"/files/{name}")
    assert reply.status_code == 200
    assert client.get(f"/files/{name}/info").status_code == 404
    with env.db.session() as session:
        file_id = session.query(File.id).filter_by(name=name).scalar()
    done = f"ingest-{file_id}-0] succeeded"
    assert eventually(lambda: done in worker.log.read_text(), timeout=60)
    assert eventually(lambda: env.proxy.backlog == 0, timeout=30)
    time.sleep(1)  # the store has the whole body: it completes that PUT now
    # The push times out (the store answers once it has the 2 MiB, ~4 s; S3_READ_TIMEOUT is
    # 2 s) while the proxy still holds half the body: the store completes that PUT after the
    # retry found the file deleted and removed the object, which must then be removed again;
    # no outbox entry is left once it is.
    assert eventually(lambda: objects(env) == [] and not outbox_kinds(env, file_id), timeout=30)
    assert not staged(env, name).exists()


def test_api_killed_between_commit_and_publish_is_published_by_the_reconciler(fault_env):
    env = fault_env
    # An API whose publish never happens: the row and its outbox entry are committed, and the
    # process is gone before the task reaches Redis (here: its broker address is dead).
    dead_port = free_port()
    client = env.app(redis_url=f"redis://127.0.0.1:{dead_port}/0").test_client()
    reply = upload(client, b"orphaned by a crash")
    assert reply.status_code == 201
    name = reply.get_json()["filename"]
    assert env.redis.process and objects(env) == []
    env.worker()
    env.beat()
    wait_for_status(env.db, name, {"stored"}, timeout=60)
    assert objects(env) == [name]

"""Fixtures on the real services: Redis, PostgreSQL and SQLite, a SeaweedFS S3 server, and
Celery workers running as subprocesses.

``stack`` is parametrized over the two deployments the product supports:
``sqlite-fs`` (the embedded default) and ``postgres-s3`` (production shape).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import psycopg
import pytest
import redis
from sqlalchemy import text

from common.db import Database
from common.queue import SENTINEL
from common.settings import Settings
from common.storage.s3 import S3Storage
from common.tasks import TASKS

# What test modules take from here; they live in testkit/ (shared with bench/).
from testkit.processes import (  # noqa: F401
    PG_URL,
    REDIS_SERVER,
    ROOT,
    Server,
    Worker,
    close_app,
    eventually,
    free_port,
    migrate,
    settings_env,
    settings_for,
    start_gunicorn,
    start_worker,
    wait_for_status,
)
from testkit.seaweed import SeaweedS3


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """The stacks' S3 server: SeaweedFS, which checks signatures, multipart and checksums as S3
    does (testkit/seaweed.py)."""
    tmp = tmp_path_factory.mktemp("seaweed")
    server = SeaweedS3(tmp, tmp / "weed.log")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database index of this test session's own, flushed before and after.

    A session claims an even index from 2 to 14 (a key in database 0), so that two sessions on
    one machine never share workers' queues; the odd index above it is the quiet database.
    """
    claims = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    # A claim whose process is gone (a run killed before its teardown) is taken over.
    take_over = claims.register_script(
        "if redis.call('get', KEYS[1]) == ARGV[1] then"
        " return redis.call('set', KEYS[1], ARGV[2], 'EX', 3600) end"
    )
    for index in range(2, 15, 2):
        key = f"pipeline-tests:db:{index}"
        if claims.set(key, os.getpid(), nx=True, ex=3600):
            break
        holder = claims.get(key)
        gone = holder is not None and not psutil.pid_exists(int(holder))
        if gone and take_over(keys=[key], args=[holder, os.getpid()]):
            break
    else:
        raise RuntimeError("every Redis test database is claimed by another session")
    redis.Redis.from_url(f"{REDIS_SERVER}/{index}").flushdb()
    yield index
    redis.Redis.from_url(f"{REDIS_SERVER}/{index}").flushdb()
    claims.delete(f"pipeline-tests:db:{index}")


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped afterwards."""
    name = f"upl_{uuid.uuid4().hex[:10]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def quiet_redis(redis_db):
    """A Redis database no worker listens on: published tasks wait there. It holds the
    service's sentinel, as a broker that has not lost its data does."""
    client = redis.Redis.from_url(f"{REDIS_SERVER}/{redis_db + 1}")
    client.flushdb()
    client.set(SENTINEL, 1)
    yield client
    client.flushdb()


@dataclass
class Stack:
    kind: str
    settings: Settings
    db: Database
    worker: Worker | None = None


@pytest.fixture(scope="session", params=["sqlite-fs", "postgres-s3"])
def stack(request, tmp_path_factory, redis_db, s3_endpoint) -> Iterator[Stack]:
    """One running deployment: database migrated, store ready, a worker consuming both queues."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite-fs":
        database_url = f"sqlite:///{tmp / 'app.db'}"
        migrate(database_url)
        settings = settings_for(
            tmp, database_url=database_url, redis_url=f"{REDIS_SERVER}/{redis_db}"
        )
    else:
        database_url = request.getfixturevalue("pg_database_url")
        bucket = f"stack-{uuid.uuid4().hex[:8]}"
        settings = settings_for(
            tmp,
            database_url=database_url,
            redis_url=f"{REDIS_SERVER}/{redis_db}",
            storage_backend="s3",
            s3_bucket=bucket,
            s3_endpoint_url=s3_endpoint,
        )
        S3Storage.from_settings(settings).ensure_bucket()
    stack = Stack(request.param, settings, Database(settings.database_url))
    stack.worker = start_worker(settings, tmp / "worker.log")
    yield stack
    stack.worker.stop()
    stack.db.dispose()


TABLES = (
    "usage_totals",
    "usage_daily",
    "file_events",
    "outbox",
    "file_tags",
    "tags",
    "files",
    "api_keys",
    "auth_sessions",
    "users",
    "open_users",
)


def empty_tables(db: Database) -> None:
    """Every table of the service emptied."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Lock in the order the pipeline does (files, then outbox), waiting for the worker's
            # transactions instead of deadlocking with them.
            conn.execute(text("LOCK TABLE files, outbox, users IN ACCESS EXCLUSIVE MODE"))
        # DELETE, in the order of the foreign keys: a test's few rows go in ~4 ms, where
        # TRUNCATE (new files for every table, synced at commit) takes ~60.
        for table in TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


#: Where kombu's Redis transport keeps messages a worker has taken and not yet acknowledged.
UNACKED = ("unacked", "unacked_index")


def settle(stack: Stack, timeout: float = 15) -> None:
    """Wait for the stack's worker to finish what earlier tests gave it (its queues and
    unacknowledged messages empty); what is still there after ``timeout`` is dropped.

    SQLite hands a deleted row's id out again: a task for an earlier test's file would
    otherwise act on this test's file of the same id once the tables are emptied."""
    broker = redis.Redis.from_url(stack.settings.redis_url)
    queues = sorted({spec.queue for spec in TASKS.values()})

    def idle() -> bool:
        with broker.pipeline() as pipe:
            for queue in queues:
                pipe.llen(queue)
            pipe.hlen(UNACKED[0])
            return not any(pipe.execute())

    if not eventually(idle, timeout=timeout):
        broker.delete(*queues, *UNACKED)
    broker.close()


@pytest.fixture
def clean_stack(stack: Stack) -> Stack:
    """The session's stack, its worker idle and its tables empty."""
    settle(stack)
    empty_tables(stack.db)
    return stack


@pytest.fixture
def pipeline(clean_stack: Stack, quiet_redis):
    """The session stack's pipeline, publishing to a Redis database no worker listens on: a
    test drives every stage itself."""
    from tests.pipelines import make_pipeline, quiet_url

    pipeline = make_pipeline(clean_stack, quiet_url(quiet_redis))
    yield pipeline
    pipeline.marks.close()
    pipeline.publisher.close()


@pytest.fixture
def app(clean_stack: Stack):
    from api import create_app

    app = create_app(clean_stack.settings)
    app.config["VALIDATE_REPLIES"] = True  # every reply checked against its documented model
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app behind a real HTTP server (werkzeug, threaded) on a free port."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def gunicorn_api(clean_stack: Stack, stack_api: str) -> str:
    """The session's gunicorn over the stack (production's server, for what only it does: HTTP
    framing, streamed bodies), its tables emptied."""
    return stack_api


@pytest.fixture(scope="session")
def token_server(stack: Stack, tmp_path_factory) -> Iterator[Server]:
    """One gunicorn per stack with V1_ACCESS=token (the shipped default), for the session."""
    settings = dataclasses.replace(stack.settings, v1_access="token")
    server = start_gunicorn(settings, tmp_path_factory.mktemp("token-api") / "gunicorn.log")
    yield server
    server.stop()


@pytest.fixture
def token_api(clean_stack: Stack, token_server: Server) -> str:
    """The URL of a token-mode API over the session's stack, its tables emptied."""
    return token_server.url


@pytest.fixture(scope="session")
def stack_api(stack: Stack, tmp_path_factory) -> Iterator[str]:
    """One gunicorn per stack for the whole session (tests that need no clean tables)."""
    server = start_gunicorn(stack.settings, tmp_path_factory.mktemp("api") / "gunicorn.log")
    yield server.url
    server.stop()


def pytest_collection_modifyitems(config, items) -> None:
    """The slow scenarios start first, one to a worker: in parallel runs (``make test``, with
    ``--maxschedchunk=2``: each worker is handed two tests at a time) a long test that starts
    last would be the whole run's tail."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    rest = [item for item in items if not item.get_closest_marker("slow")]
    ordered = []
    for item in slow:
        ordered += [item, *rest[:1]]
        rest = rest[1:]
    items[:] = ordered + rest

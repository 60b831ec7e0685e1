"""Fixtures on the real services: Redis, PostgreSQL and SQLite, moto's S3 server over HTTP, and
Celery workers running as subprocesses.

``stack`` is parametrized over the two deployments the product supports:
``sqlite-fs`` (the embedded default) and ``postgres-s3`` (production shape).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from alembic import command
from alembic.config import Config
from moto.server import ThreadedMotoServer
from sqlalchemy import text

from common.db import Database, migration_connection
from common.models import File
from common.queue import SENTINEL
from common.settings import Settings
from common.storage.s3 import S3Storage

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def migrate(database_url: str, revision: str = "head", *, down: bool = False) -> None:
    """Bring a database to ``revision`` (up, or ``down``) with the project's Alembic
    migrations, on a connection as ``alembic upgrade`` makes it (common.db)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    db = Database(database_url)
    with migration_connection(db.engine) as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
    db.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database index of this test session's own, flushed before and after.

    A session claims an even index from 2 to 14 (a key in database 0), so that two sessions on
    one machine never share workers' queues; the odd index above it is the quiet database.
    """
    claims = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    for index in range(2, 15, 2):
        if claims.set(f"pipeline-tests:db:{index}", os.getpid(), nx=True, ex=3600):
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


def settings_for(tmp: Path, **overrides) -> Settings:
    """Settings of one deployment shape rooted in ``tmp``."""
    base = {
        "staging_dir": str(tmp / "staging"),
        "storage_dir": str(tmp / "storage"),
        "secret_key": "test-secret-key-of-at-least-32-bytes",
        # The v1 suite runs as the local stack does: v1 open (tests of token mode say so).
        "v1_access": "open",
        "ratelimit_enabled": False,
    }
    return Settings.from_env({}, **(base | overrides))


@dataclass
class Worker:
    """A real ``celery -A worker worker`` process."""

    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def settings_env(settings: Settings) -> dict[str, str]:
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "STORAGE_BACKEND": settings.storage_backend,
        "STORAGE_DIR": settings.storage_dir,
        "STAGING_DIR": settings.staging_dir,
        "SECRET_KEY": settings.secret_key or "",
        "INGEST_MAX_RETRIES": str(settings.ingest_max_retries),
        "RETRY_BACKOFF_MAX": str(settings.retry_backoff_max),
        "VISIBILITY_TIMEOUT": str(settings.visibility_timeout),
        "MAX_IMAGE_PIXELS": str(settings.max_image_pixels),
        "LOG_FORMAT": settings.log_format,
        "OUTBOX_STALE_AFTER": str(settings.outbox_stale_after),
        "RECONCILE_INTERVAL": str(settings.reconcile_interval),
        "OUTBOX_MAX_PUBLISHES": str(settings.outbox_max_publishes),
        "CLAIM_LEASE": str(settings.claim_lease),
        "S3_READ_TIMEOUT": str(settings.s3_read_timeout),
        "S3_MAX_ATTEMPTS": str(settings.s3_max_attempts),
        "V1_ACCESS": settings.v1_access,
        "REGISTRATION": settings.registration,
        "JWT_ACCESS_TTL": str(settings.jwt_access_ttl),
        "JWT_REFRESH_TTL": str(settings.jwt_refresh_ttl),
        "RATELIMIT_LOGIN": settings.ratelimit_login,
        "RATELIMIT_REGISTER": settings.ratelimit_register,
        "TRUSTED_PROXY_COUNT": str(settings.trusted_proxy_count),
    }
    if settings.s3_bucket:
        env["S3_BUCKET"] = settings.s3_bucket
    if settings.s3_endpoint_url:
        env["S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def start_worker(
    settings: Settings, log: Path, queues: str = "uploads,metadata", concurrency: int = 2
) -> Worker:
    env = os.environ | settings_env(settings)
    argv = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", queues]
    argv += [
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
        "-n",
        f"t{uuid.uuid4().hex[:6]}@%h",
    ]
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if b" ready." in log.read_bytes():
            return Worker(process, log)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    Worker(process, log).stop()
    raise RuntimeError(f"worker did not start:\n{log.read_text()}")


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
            # transactions instead of deadlocking with them, then empty the tables.
            conn.execute(text("LOCK TABLE files, outbox, users IN ACCESS EXCLUSIVE MODE"))
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        else:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clean_stack(stack: Stack) -> Stack:
    """The session's stack with empty tables."""
    empty_tables(stack.db)
    return stack


def close_app(app) -> None:
    """Release what an app holds: database connections, broker connections."""
    app.extensions["pipeline"].close()


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


def wait_for_status(db: Database, name: str, statuses: set[str], timeout: float = 20) -> File:
    """Poll the database until file ``name`` reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as session:
            file = session.query(File).filter_by(name=name).one_or_none()
        if file is not None and file.status.value in statuses:
            return file
        if time.monotonic() > deadline:
            state = file.status.value if file else "missing"
            raise AssertionError(f"{name} still {state} after {timeout}s")
        time.sleep(0.05)


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


def eventually(predicate, timeout: float = 10) -> bool:
    """True as soon as ``predicate()`` is; False if it never is within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


def start_gunicorn(
    settings: Settings, log: Path, app: str = "api:create_app()", **env: str
) -> Server:
    """The API as production runs it: gunicorn with the repository's gunicorn.conf.py."""

    port = free_port()
    env = (
        os.environ
        | settings_env(settings)
        | {
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "4",
            "RATELIMIT_ENABLED": str(settings.ratelimit_enabled).lower(),
        }
        | env
    )
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", app],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    if not eventually(lambda: _answers(server.url), timeout=30):
        server.stop()
        raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}")
    return server


@pytest.fixture
def gunicorn_api(clean_stack: Stack, tmp_path) -> Iterator[str]:
    server = start_gunicorn(clean_stack.settings, tmp_path / "gunicorn.log")
    yield server.url
    server.stop()


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


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

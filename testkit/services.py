"""Services of a test's own, on free ports, that it can stop and restart (fault tests and
``python -m bench.faults``): a redis-server, a moto S3 server behind a TCP proxy that can slow
or cut the line, workers, beat and API apps built on them, and a fresh SQLite database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis
from moto.server import ThreadedMotoServer

from common.db import Database
from common.settings import Settings
from common.storage.s3 import S3Storage
from testkit.processes import (
    PG_URL,
    ROOT,
    Worker,
    close_app,
    eventually,
    free_port,
    migrate,
    settings_env,
    start_worker,
)
from testkit.tcpproxy import TcpProxy


class RedisServer:
    """A redis-server of the test's own; ``stop()`` and ``start()`` keep the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        assert eventually(self._answers, timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False


class S3Server:
    """moto's S3 server; its data lives in this process, so a restart keeps the objects."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: ThreadedMotoServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class FaultEnv:
    settings: Settings
    redis: RedisServer
    s3: S3Server
    proxy: TcpProxy
    tmp: Path
    db: Database
    processes: list = field(default_factory=list)
    apps: list = field(default_factory=list)
    closers: list = field(default_factory=list)

    def direct_store(self) -> S3Storage:
        """The bucket seen without the proxy: what is really there."""
        return S3Storage(self.settings.s3_bucket, endpoint_url=self.s3.url)

    def worker(self, name: str = "worker", queues: str = "uploads,metadata") -> Worker:
        worker = start_worker(self.settings, self.tmp / f"{name}.log", queues=queues)
        self.processes.append(worker)
        return worker

    def beat(self) -> Worker:
        env = os.environ | settings_env(self.settings)
        argv = [sys.executable, "-m", "celery", "-A", "worker", "beat"]
        argv += ["--schedule", str(self.tmp / "beat-schedule"), "-l", "INFO"]
        log = self.tmp / "beat.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        beat = Worker(process, log)
        self.processes.append(beat)
        return beat

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        for app in self.apps:
            close_app(app)
        for closer in self.closers:
            closer()
        self.db.dispose()
        if self.settings.database_url.startswith("postgresql"):
            drop_pg_database(self.db.engine.url.render_as_string(hide_password=False))
        self.proxy.close()
        self.s3.stop()
        self.redis.stop()

    def app(self, **overrides):
        from api import create_app

        app = create_app(replace(self.settings, **overrides))
        self.apps.append(app)
        return app


#: The one list of timings the fault scenarios shorten, and why. Everything else, and every
#: setting of a scenario that proves a recovery bound (``make_fault_env(shipped=True)``:
#: a worker killed mid-push, with VISIBILITY_TIMEOUT, CLAIM_LEASE, RECONCILE_INTERVAL and
#: OUTBOX_STALE_AFTER at their defaults), is the shipped default.
SHORTENED = {
    # The store-outage scenarios reach their last retry in seconds, not in an hour.
    "ingest_max_retries": 3,
    "retry_backoff_max": 2,
    # What Redis lost, or what an API never published, is published again within a second
    # or two (the default is 15 s: the scenarios would only wait longer).
    "reconcile_interval": 1.0,
    # A push to a silent store gives up after 2 s instead of 30 s x 3 attempts, so that the
    # retry that follows is seen in seconds (the health probe's own 1.5 s bound is not a
    # setting, and is what the silent-store scenario proves).
    "s3_read_timeout": 2.0,
    "s3_max_attempts": 1,
}


def make_fault_env(tmp_path: Path, *, shipped: bool = False, database: str = "sqlite") -> FaultEnv:
    """A fresh set of services; ``close()`` stops them all. ``shipped``: every setting at its
    default, none from ``SHORTENED``. ``database``: ``sqlite`` (a file of its own) or
    ``postgres`` (a database of its own on the local server, dropped by ``close()``)."""
    redis_server = RedisServer()
    s3 = S3Server()
    proxy = TcpProxy(s3.port)
    if database == "postgres":
        database_url = create_pg_database()
    else:
        database_url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(database_url)
    settings = Settings.from_env(
        {},
        database_url=database_url,
        redis_url=redis_server.url,
        storage_backend="s3",
        s3_bucket=f"faults-{uuid.uuid4().hex[:8]}",
        s3_endpoint_url=proxy.url,
        staging_dir=str(tmp_path / "staging"),
        storage_dir=str(tmp_path / "storage"),
        secret_key="faults-secret-key-of-at-least-32-bytes",
        v1_access="open",
        ratelimit_enabled=False,
        **({} if shipped else SHORTENED),
    )
    S3Storage(settings.s3_bucket, endpoint_url=s3.url).ensure_bucket()
    return FaultEnv(settings, redis_server, s3, proxy, tmp_path, Database(database_url))


def create_pg_database() -> str:
    """A fresh PostgreSQL database on the local server; its URL."""
    import psycopg

    name = f"faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_url() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")

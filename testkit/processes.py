"""Running the product's processes for tests and the bench: settings of a deployment shape,
migrations, Celery workers and gunicorn as production starts them, free ports, waiting.

Shared by ``tests/`` and ``bench/`` (neither imports the other).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from api.services import services
from common.db import Database, migration_connection
from common.models import File
from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# moto's S3 servers take any credentials; boto3 wants some.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

#: Password hashes at argon2's least cost, for the suite's ~500 registrations and log-ins
#: (~0.2 s of CPU each at the shipped cost; a faster hasher in tests is what Django's
#: documentation advises too). The one place the suite changes them, and the one reason; the
#: tests of what the cost is for (a log-in of an unknown user takes as long as a wrong
#: password) run a server at the shipped cost (``SHIPPED_PASSWORD_HASHES``).
CHEAP_PASSWORD_HASHES = {
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_KIB": "1024",
    "ARGON2_PARALLELISM": "1",
}
SHIPPED_PASSWORD_HASHES = {
    "ARGON2_TIME_COST": "3",
    "ARGON2_MEMORY_KIB": "65536",
    "ARGON2_PARALLELISM": "4",
}
for _name, _value in CHEAP_PASSWORD_HASHES.items():
    os.environ.setdefault(_name, _value)

#: Where that PostgreSQL listens (fault tests put a proxy in front of it).
PG_PORT = make_url(PG_URL).port or 5432


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
        "RATELIMIT_DEFAULT": settings.ratelimit_default,
        "RATELIMIT_UPLOAD": settings.ratelimit_upload,
        "RATELIMIT_LOGIN": settings.ratelimit_login,
        "RATELIMIT_REGISTER": settings.ratelimit_register,
        "TRUSTED_PROXY_COUNT": str(settings.trusted_proxy_count),
    }
    if settings.s3_bucket:
        env["S3_BUCKET"] = settings.s3_bucket
    if settings.s3_endpoint_url:
        env["S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.s3_public_endpoint_url:
        env["S3_PUBLIC_ENDPOINT_URL"] = settings.s3_public_endpoint_url
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


def close_app(app) -> None:
    """Release what an app holds: database connections, broker connections."""
    services(app).close()


def wait_for_status(db: Database, name: str, statuses: set[str], timeout: float = 20) -> File:
    """Poll the database until file ``name`` reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as session:
            file = session.query(File).filter_by(name=name).one_or_none()
        if file is not None and file.status.value in statuses:
            return file
        if time.monotonic() > deadline:
            state = f"{file.status.value} ({file.error})" if file else "missing"
            raise AssertionError(f"{name} still {state} after {timeout}s")
        time.sleep(0.05)


def eventually(predicate, timeout: float = 10) -> bool:
    """True as soon as ``predicate()`` is; False if it never is within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


#: Ports this process hands out: its own range below the kernel's ephemeral ports (32768 and
#: up), so that parallel test processes (pytest-xdist workers) never hand out the same one, and
#: no client socket of anyone's takes one between its check and its use.
_PORTS_PER_PROCESS = 800
_next_port = itertools.count()


def _port_range() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") else 0
    if os.environ.get("TESTKIT_PORTS_CHILD"):  # a process a test started (python -m bench)
        index = 14
    start = 20000 + index * _PORTS_PER_PROCESS
    if start + _PORTS_PER_PROCESS > 32768:
        raise RuntimeError(f"no port range left for test process {worker!r}")
    return range(start, start + _PORTS_PER_PROCESS)


def free_port() -> int:
    """A loopback port nobody listens on, from this process's own range."""
    ports = _port_range()
    for _ in range(len(ports)):
        port = ports[next(_next_port) % len(ports)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"every port of {ports} is taken")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it. One still running 15 s later is a defect:
        it is aborted (its threads' stacks go to its log: ``PYTHONFAULTHANDLER``) and the
        error carries the end of its log."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            tail = self.log.read_text(errors="replace")[-6000:]
            command = " ".join(map(str, self.process.args))
            message = f"{command} still ran 15 s after SIGTERM; its log:\n{tail}"
            raise RuntimeError(message) from None


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
            "PYTHONFAULTHANDLER": "1",
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


def start_realtime(settings: Settings, log: Path, **env: str) -> Server:
    """The realtime process as production runs it (``python -m realtime``)."""
    port = free_port()
    env = (
        os.environ
        | settings_env(settings)
        | {"REALTIME_BIND": f"127.0.0.1:{port}", "PYTHONFAULTHANDLER": "1"}
        | env
    )
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "realtime"],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    if not eventually(lambda: _answers(server.url + "/healthz"), timeout=30):
        server.stop()
        raise RuntimeError(f"the realtime process did not start:\n{log.read_text()}")
    return server


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False

"""``python -m bench [--quick]``: the speed targets, each measured beside its baseline.

Starts everything on free ports (Redis, moto's S3 server in its own process, a PostgreSQL
database of its own, the API under gunicorn with gunicorn.conf.py, Celery workers), runs each
scenario against the product and its baseline alternately, and prints one line per target:
product figure, baseline figure, ratio, target, PASS/FAIL. Rate limits are relaxed through the
settings. Figures are medians over the rounds. ``--quick`` runs small numbers once, with one
gunicorn process a server, to prove the bench works (CI); its figures are not meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import boto3
import psutil
import psycopg
import redis
from botocore.config import Config

from bench import direct, finding, live
from common.settings import Settings
from common.storage.s3 import S3Storage
from testkit import multipart
from testkit.nginx import start_nginx
from testkit.processes import (
    PG_URL,
    eventually,
    free_port,
    migrate,
    settings_env,
    start_gunicorn,
    start_worker,
)
from testkit.services import RedisServer

KIB, MIB = 1024, 1024 * 1024
RELAXED = {
    "RATELIMIT_DEFAULT": "1000000/second",
    "RATELIMIT_UPLOAD": "1000000/second",
    "RATELIMIT_LOGIN": "1000000/second",
    "RATELIMIT_REGISTER": "1000000/second",
}
PROD = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "8"}


@dataclass
class Target:
    id: str
    scenario: str
    product: float
    baseline: float | None
    unit: str
    ratio: float | None
    target: str
    passed: bool
    #: What the baseline column holds, when it is not a baseline program doing the same work
    #: (P4: the product's own figure at 1,000 files; P5: the product's idle process).
    against: str = "baseline"

    def record(self) -> dict:
        return {
            "id": self.id,
            "scenario": self.scenario,
            "product": round(self.product, 3),
            "baseline": None if self.baseline is None else round(self.baseline, 3),
            "baseline_is": self.against,
            "unit": self.unit,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
            "pass": self.passed,
        }

    def line(self) -> str:
        base = f"{self.baseline:9.1f}" if self.baseline is not None else "        -"
        ratio = f"{self.ratio:6.2f}" if self.ratio is not None else "     -"
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{self.id:3} {self.scenario:46} product={self.product:9.1f} {self.against}={base} "
            f"{self.unit:6} ratio={ratio}  target {self.target:14} {verdict}"
        )


class MotoServer:
    """moto's S3 server in a process of its own, so it does not share the bench's GIL."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        assert eventually(self._answers, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            import requests

            return requests.get(self.url, timeout=1).status_code < 500
        except Exception:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class ProxyProcess:
    """testkit.tcpproxy in a process of its own: relaying every store request through threads of
    the bench's process would slow the load generator and blur its latencies."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testkit.tcpproxy", str(target_port), "--delay", str(delay)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.port = int(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()


class Bench:
    def __init__(self, tmp: Path, quick: bool) -> None:
        self.tmp = tmp
        self.quick = quick
        self.redis = RedisServer()
        self.moto = MotoServer(tmp / "moto.log")
        self.db_name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.database_url = PG_URL.rsplit("/", 1)[0] + "/" + self.db_name
        migrate(self.database_url)
        self.settings = Settings.from_env(
            {},
            database_url=self.database_url,
            redis_url=self.redis.url,
            storage_backend="s3",
            s3_bucket="bench",
            s3_endpoint_url=self.moto.url,
            staging_dir=str(tmp / "staging"),
            storage_dir=str(tmp / "storage"),
            secret_key="bench-secret-key-of-at-least-32-bytes",
            v1_access="open",
        )
        S3Storage.from_settings(self.settings).ensure_bucket()
        os.environ.update(RELAXED)

    def close(self) -> None:
        self.moto.stop()
        self.redis.stop()
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    # -- helpers ----------------------------------------------------------------------------

    def reset(self) -> None:
        """An empty pipeline: no rows, no queued tasks (a scenario without workers leaves its
        uploads queued), no staged files."""
        with psycopg.connect(self.database_url.replace("+psycopg", ""), autocommit=True) as conn:
            # A worker may still be settling the last round's files: its transaction and the
            # TRUNCATE take their locks in different orders, and PostgreSQL ends one of them
            # (the worker retries its task; this retries the TRUNCATE).
            for attempt in range(10):
                try:
                    conn.execute(
                        "TRUNCATE outbox, file_tags, tags, files, api_keys, auth_sessions, users"
                        " RESTART IDENTITY CASCADE"
                    )
                    break
                except psycopg.errors.DeadlockDetected:
                    if attempt == 9:
                        raise
                    time.sleep(0.2)
        redis.Redis.from_url(self.redis.url).flushall()
        shutil.rmtree(self.settings.staging_dir, ignore_errors=True)
        os.makedirs(self.settings.staging_dir)
        # Freeing the removed files' blocks (a journal commit, with discards where the disk is
        # mounted so) is done now, not in the first fsync of the next measurement.
        os.sync()

    def api(
        self,
        name: str,
        settings: Settings | None = None,
        app: str = "api:create_app()",
        **env: str,
    ):
        # --quick proves the bench runs, its figures mean nothing: one gunicorn process a
        # server instead of production's two (a process's start is about a second of CPU).
        shape = PROD | {"GUNICORN_WORKERS": "1"} if self.quick else PROD
        return start_gunicorn(
            settings or self.settings, self.tmp / f"{name}.log", app, **(shape | RELAXED | env)
        )

    def worker(self, name: str, queues: str, concurrency: int, settings=None):
        return start_worker(
            settings or self.settings,
            self.tmp / f"{name}.log",
            queues=queues,
            concurrency=concurrency,
        )

    def stored_count(self) -> int:
        with psycopg.connect(self.database_url.replace("+psycopg", "")) as conn:
            return conn.execute("SELECT count(*) FROM files WHERE status = 'stored'").fetchone()[0]

    def rounds(self) -> int:
        return 1 if self.quick else 3


def _admin_url() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")


#: Uploads answered 503 with Retry-After and sent again, by status (printed after each target).
RETRIED: collections.Counter = collections.Counter()


async def _post_many(url: str, body: bytes, total: int, concurrency: int, headers=None):
    """POST ``body`` ``total`` times from ``concurrency`` clients; latencies and wall time."""
    latencies: list[float] = []
    queue = asyncio.Queue()
    for _ in range(total):
        queue.put_nowait(None)
    headers = {"Content-Type": multipart.CONTENT_TYPE, **(headers or {})}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client():
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                while True:
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        if reply.status == 503 and "Retry-After" in reply.headers:
                            # What the API asks of a client (docs/API.md): wait, send again.
                            # Counted and printed: a figure with retries in it says so.
                            RETRIED[reply.status] += 1
                            await asyncio.sleep(min(float(reply.headers["Retry-After"]), 5))
                            continue
                        if reply.status >= 300:
                            raise RuntimeError(f"{url}: {reply.status} {await reply.text()}")
                    break
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def post_many(url, body, total, concurrency, headers=None):
    return asyncio.run(_post_many(url, body, total, concurrency, headers))


def warm_up(bench: Bench, *apis) -> None:
    """Unmeasured uploads to each server first, so that no figure includes a process's first
    requests (connections being opened, code paths run for the first time)."""
    body = multipart.file_body("warm.pdf", b"%PDF-1.4\n" + os.urandom(10 * KIB))
    for api in apis:
        post_many(f"{api.url}/files/upload", body, 8 if bench.quick else 32, 8)


def p99(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[98]
        if len(values) > 1
        else values[0]
    )


# -- scenarios ----------------------------------------------------------------------------------


async def _rate_for(url: str, body: bytes, seconds: float, concurrency: int, headers=None):
    """Uploads a second that ``concurrency`` clients get answered 201 in ``seconds``."""
    headers = {"Content-Type": multipart.CONTENT_TYPE, **(headers or {})}
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client():
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url, data=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 201:
                        raise RuntimeError(f"{url}: {reply.status} {await reply.text()}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def rate_for(url, body, seconds, concurrency=8, headers=None) -> float:
    return asyncio.run(_rate_for(url, body, seconds, concurrency, headers))


def p1_acceptance(bench: Bench) -> list[Target]:
    """Uploads of 1 MiB from 8 clients for a fixed time a round, the product and its same-work
    baseline (bench.baselines.same_work_app) in alternating rounds, each after a reset; the
    discarding app is the limit, reported. Reported too: both through the shipped front proxy
    (nginx, deploy/nginx, one in front of each), and a v2 upload with a JWT against the same
    baseline (which does no authentication and counts no usage: the ratio includes both)."""
    body = multipart.file_body("one-mib.pdf", b"%PDF-1.4\n" + os.urandom(MIB - 9))
    seconds = 0.5 if bench.quick else 8.0
    bench.reset()
    servers = {
        "product": bench.api("p1-api", TRUSTED_PROXY_COUNT="1"),
        "same work": bench.api("p1-same", app="bench.baselines:same_work_app"),
        "discard": bench.api("p1-discard", app="bench.baselines:discard_app"),
    }
    urls = {name: f"{server.url}/files/upload" for name, server in servers.items()}
    proxies = []
    try:
        for name in ("product", "same work"):
            directory = bench.tmp / f"p1-nginx-{name.replace(' ', '-')}"
            directory.mkdir(exist_ok=True)  # a later run's nginx writes over an earlier one's
            port = free_port()
            proxies.append(start_nginx(directory, port, servers[name].url.removeprefix("http://")))
            urls[f"{name} via proxy"] = f"http://127.0.0.1:{port}/files/upload"
        figures: dict[str, list[float]] = {name: [] for name in (*urls, "product v2 JWT")}
        warm_up(bench, *servers.values())
        for _ in range(bench.rounds()):
            for name, url in urls.items():
                bench.reset()
                figures[name].append(rate_for(url, body, seconds))
            bench.reset()
            _, auth = live._account(servers["product"].url, "p1")
            url = f"{servers['product'].url}/api/v2/files"
            figures["product v2 JWT"].append(rate_for(url, body, seconds, headers=auth))
    finally:
        for proxy in proxies:
            proxy.terminate()
            proxy.wait(10)
        for server in servers.values():
            server.stop()
    median = {name: statistics.median(values) for name, values in figures.items()}
    spread = {name: f"{min(v):.0f}-{max(v):.0f}" for name, v in figures.items()}
    base = median["same work"]
    ratio = median["product"] / base
    jwt = median["product v2 JWT"] / base
    proxied = median["product via proxy"] / median["same work via proxy"]
    limit = median["product"] / median["discard"]
    print(f"# P1 rounds (req/s, min-max): {spread}", flush=True)
    return [
        Target("P1", "upload acceptance, 1 MiB, 8 clients vs same work", median["product"],
               base, "req/s", ratio, ">= 0.7", ratio >= 0.7),
        Target("P1", "the same through the shipped front proxy", median["product via proxy"],
               median["same work via proxy"], "req/s", proxied, "reported", True),
        Target("P1", "v2 upload with a JWT vs same work", median["product v2 JWT"], base,
               "req/s", jwt, "reported", True),
        Target("P1", "upload acceptance vs discarding app (limit)", median["product"],
               median["discard"], "req/s", limit, "reported", True),
    ]  # fmt: skip


def p2_latency_slow_store(bench: Bench) -> list[Target]:
    """100 KiB uploads from 8 clients, p99 of their answers, with every store request delayed
    100 ms: the product (its workers pushing meanwhile) against the original synchronous
    design (bench.baselines.sync_app), and against the product itself on a store without the
    delay (P2': the store's latency must not reach the uploader). The undelayed product has a
    Redis database of its own, so each product's workers take only its own uploads. Rounds
    alternate, each after a reset."""
    proxy = ProxyProcess(bench.moto.port, delay=0.1)
    slow = replace(bench.settings, s3_endpoint_url=proxy.url)
    fast = replace(bench.settings, redis_url=bench.redis.url.rsplit("/", 1)[0] + "/1")
    body = multipart.file_body("report.pdf", b"%PDF-1.4\n" + os.urandom(100 * KIB))
    total = 8 if bench.quick else 400
    bench.reset()
    servers = {
        "product": bench.api("p2-api", slow),
        "sync": bench.api("p2-base", slow, app="bench.baselines:sync_app"),
        "product, no delay": bench.api("p2-fast", fast),
    }
    workers = [
        bench.worker("p2-worker", "uploads,metadata", 4, slow),
        bench.worker("p2-fast-worker", "uploads,metadata", 4, fast),
    ]
    figures: dict[str, list[float]] = {name: [] for name in servers}
    try:
        warm_up(bench, *servers.values())
        for _ in range(bench.rounds()):
            for name, server in servers.items():
                # A reset before every round of each: no product's workers drain a backlog
                # while another is measured, nor the baseline's objects pile up.
                bench.reset()
                latencies, _ = post_many(f"{server.url}/files/upload", body, total, 8)
                figures[name].append(p99(latencies) * 1000)
    finally:
        for server in servers.values():
            server.stop()
        for worker in workers:
            worker.stop()
        proxy.close()
    median = {name: statistics.median(values) for name, values in figures.items()}
    spread = {name: f"{min(v):.0f}-{max(v):.0f}" for name, v in figures.items()}
    print(f"# P2 rounds (p99 ms, min-max): {spread}", flush=True)
    p, b, own = median["product"], median["sync"], median["product, no delay"]
    return [
        Target("P2", "upload p99, store +100 ms per request", p, b, "ms", p / b, "<= 0.3",
               p / b <= 0.3),
        Target("P2'", "the same vs the product on an undelayed store", p, own, "ms", p / own,
               "<= 1.2", p / own <= 1.2, against="undelayed"),
    ]  # fmt: skip


def p3_push_throughput(bench: Bench) -> list[Target]:
    """1 MiB files staged through the API with no worker running, then pushed: by the product's
    worker (8 at once), and by its same-work baseline (bench.baselines.push_loop, 8 processes
    pulling the same files' ids from a Redis list), in alternating rounds, each after a reset.
    The bare put_object loop is the limit, reported.

    Steady state, as P1's unmeasured uploads give it: each side's first ``warm`` files are
    pushed unmeasured (a fresh pool process spends ~0.1-0.15 s of CPU on its first task, the
    baseline's processes on their first put; eight of them are over 10 ms a file of 96), and
    the clock runs from the moment they are stored to the last file."""
    count = 4 if bench.quick else 96
    warm = 0 if bench.quick else 16
    at_once = 2 if bench.quick else 8
    data = b"%PDF-1.4\n" + os.urandom(MIB - 9)
    body = multipart.file_body("push.pdf", data)
    figures: dict[str, list[float]] = {
        "product": [], "same work": [], "same work, v2.1": [], "bare puts": []
    }  # fmt: skip
    client = boto3.client(
        "s3",
        endpoint_url=bench.moto.url,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            max_pool_connections=16,
        ),
    )

    broker = redis.Redis.from_url(bench.redis.url)
    env, root = os.environ | settings_env(bench.settings), Path(__file__).parent.parent

    def staged() -> None:
        bench.reset()
        api = bench.api("p3-api")
        post_many(f"{api.url}/files/upload", body, warm + count, 8)  # queued; no worker yet
        api.stop()

    def timed() -> float:
        """Files a second from the moment the warm-up's are stored to the last one."""
        assert eventually(lambda: bench.stored_count() >= warm, timeout=300)
        started = time.perf_counter()
        assert eventually(lambda: bench.stored_count() >= warm + count, timeout=300)
        return count / (time.perf_counter() - started)

    for _ in range(bench.rounds()):
        staged()
        worker = bench.worker("p3-worker", "uploads", at_once)
        try:
            figures["product"].append(timed())
        finally:
            worker.stop()

        for loop, recorded in (("same work", False), ("same work, v2.1", True)):
            staged()
            broker.delete("uploads")  # the product's messages: the baseline pulls its own list
            code = f"from bench.baselines import push_loop; push_loop('p3-ids', {recorded=})"
            loops = [
                subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root)
                for _ in range(at_once)
            ]
            assert eventually(lambda: int(broker.get("p3-ids:ready") or 0) == at_once, timeout=60)
            broker.rpush("p3-ids", *range(1, warm + count + 1))
            figures[loop].append(timed())
            assert all(process.wait(30) == 0 for process in loops)

        def put(i):
            client.put_object(Bucket="bench", Key=f"baseline/{uuid.uuid4().hex}", Body=data)

        started = time.perf_counter()
        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(put, range(count)))
        figures["bare puts"].append(count / (time.perf_counter() - started))
    median = {name: statistics.median(values) for name, values in figures.items()}
    spread = {name: f"{min(v):.0f}-{max(v):.0f}" for name, v in figures.items()}
    print(f"# P3 rounds (obj/s, min-max): {spread}", flush=True)
    ratio = median["product"] / median["same work"]
    recorded = median["product"] / median["same work, v2.1"]
    limit = median["product"] / median["bare puts"]
    return [
        Target("P3", f"worker push, 1 MiB, {at_once} at once vs same work", median["product"],
               median["same work"], "obj/s", ratio, ">= 0.7", ratio >= 0.7),
        Target("P3", "the same vs the loop with v2.1's records", median["product"],
               median["same work, v2.1"], "obj/s", recorded, "reported", True),
        Target("P3", "worker push vs bare put_object loop (limit)", median["product"],
               median["bare puts"], "obj/s", limit, "reported", True),
    ]  # fmt: skip


def p4_listing(bench: Bench) -> list[Target]:
    """``GET /files?limit=100`` at 1,000, 10,000 and 100,000 files, sequential requests on one
    connection. Cold: before each measured request (unmeasured) the page's files get a new
    original name, so none of its 100 download URLs is in the URL cache and each is signed, as
    for a page nobody asked for lately; the query and the page are otherwise the same. Warm:
    the same page again and again, its URLs from the cache. Judged: the cold p99's growth from
    1,000 files (the absolute figure depends on the machine's minute and is reported)."""
    api = bench.api("p4-api")
    requests_per_size = 10 if bench.quick else 300
    sizes = (1_000, 2_000) if bench.quick else (1_000, 10_000, 100_000)
    cold: dict[int, float] = {}
    warm: dict[int, float] = {}
    url = f"{api.url}/files?limit=100"
    try:
        bench.reset()
        inserted = 0
        with psycopg.connect(bench.database_url.replace("+psycopg", ""), autocommit=True) as db:
            renamed = iter(range(10**9))

            def unseen() -> None:  # the first page's files, named anew
                db.execute(
                    "UPDATE files SET original_name = %s WHERE id IN"
                    " (SELECT id FROM files ORDER BY name LIMIT 100)",
                    (f"doc-{next(renamed)}.pdf",),
                )

            for size in sizes:
                _insert_stored_rows(bench, inserted, size - inserted)
                inserted = size
                db.execute("VACUUM ANALYZE files")
                latencies, _ = asyncio.run(
                    _get_many(url, requests_per_size, unmeasured=20, before_each=unseen)
                )
                cold[size] = p99(latencies) * 1000
                latencies, _ = asyncio.run(_get_many(url, requests_per_size, unmeasured=20))
                warm[size] = p99(latencies) * 1000
    finally:
        api.stop()
    base = cold[sizes[0]]
    targets = []
    for size in sizes:
        ratio = cold[size] / base
        targets.append(
            Target("P4", f"GET /files?limit=100 p99, {size:,} files, cold", cold[size], base,
                   "ms", ratio, "<= 1.5x", ratio <= 1.5, against="at 1k")
        )  # fmt: skip
        targets.append(
            Target("P4", f"GET /files?limit=100 p99, {size:,} files, warm", warm[size],
                   cold[size], "ms", warm[size] / cold[size], "reported", True, against="cold")
        )  # fmt: skip
    return targets


def _insert_stored_rows(bench: Bench, start: int, count: int, owner_id: int | None = None):
    with psycopg.connect(bench.database_url.replace("+psycopg", "")) as conn:
        conn.execute(
            """
            INSERT INTO files (name, original_name, extension, size, content_type, status,
                               sha256, md5, etag, metadata, attempts, uploaded_at, stored_at,
                               updated_at, owner_id)
            SELECT '20250101_000000_' || lpad(to_hex(g), 16, '0') || '.pdf', 'doc.pdf', 'pdf',
                   1024, 'application/pdf', 'stored', repeat('a', 64), repeat('b', 32),
                   repeat('b', 32), '{}'::json, 1, now() - g * interval '1 second', now(),
                   now(), %s
            FROM generate_series(%s::int, %s::int) AS g
            """,
            (owner_id, start, start + count - 1),
        )
        # Statistics for the new rows now, not from autovacuum in the middle of a measurement.
        conn.execute("ANALYZE files")


async def _get_many(url: str, total: int, unmeasured: int = 0, headers=None, before_each=None):
    """``total`` sequential GETs on one connection, after ``unmeasured`` ones on the
    same connection (so on the same server process: a new connection may reach another);
    ``before_each()`` runs before each measured one, unmeasured."""
    latencies = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(unmeasured):
            async with session.get(url) as reply:
                await reply.read()
        started = time.perf_counter()
        for _ in range(total):
            if before_each is not None:
                before_each()
            t = time.perf_counter()
            async with session.get(url) as reply:
                await reply.read()
                assert reply.status == 200
            latencies.append(time.perf_counter() - t)
    return latencies, time.perf_counter() - started


def p5_memory(bench: Bench) -> Target:
    api = bench.api("p5-api")
    body = multipart.file_body("big.pdf", b"%PDF-1.4\n" + os.urandom(16 * MIB - 9))
    workers = psutil.Process(api.process.pid).children()
    idle = max(p.memory_info().rss for p in workers) / MIB
    peak = idle
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            for process in workers:
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, process.memory_info().rss / MIB)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        post_many(f"{api.url}/files/upload", body, 8 if bench.quick else 32, 8)
    finally:
        stop.set()
        sampler.join()
        api.stop()
    return Target(
        "P5",
        "API peak RSS/process, 8 x 16 MiB uploads",
        peak,
        idle,
        "MiB",
        peak / idle,
        "<= 100 MiB",
        peak <= 100,
        against="idle",
    )


def p6_end_to_end(bench: Bench) -> list[Target]:
    """One 100 KiB upload at a time on an idle stack (API, two ingest processes, one metadata
    process), from the request to the file's ``file.stored`` event (the moment its stored row
    is written), 40 times; the client seeing ``stored`` (polling every 5 ms) is reported.
    Where the time goes, medians: the client's clock for the answer and for noticing, the
    file's own events (``file.pending``, ``file.processing``, ``file.stored``, each stamped by
    the process that made the change) for the rest; the worker's steps (sniff, hashes, push)
    measured alone in this process on the same file and store, the settle being the rest."""
    import requests

    bench.reset()
    api = bench.api("p6-api")
    worker = bench.worker("p6-uploads", "uploads", 2)
    meta = bench.worker("p6-metadata", "metadata", 1)
    data = b"%PDF-1.4\n" + os.urandom(100 * KIB)
    body = multipart.file_body("small.pdf", data)
    session = requests.Session()
    times: list[float] = []  # request -> stored (the file's stored event)
    parts: dict[str, list[float]] = collections.defaultdict(list)
    noticed: list[float] = []  # request -> the client saw it stored
    try:
        for _ in range(3 if bench.quick else 40):
            started = time.time()
            reply = session.post(
                f"{api.url}/files/upload",
                data=body,
                headers={"Content-Type": multipart.CONTENT_TYPE},
            )
            answered = time.time()
            info = reply.json()["status_url"]
            while session.get(info).json()["status"] != "stored":
                time.sleep(0.005)
            seen = time.time()
            at = _event_times(bench, reply.json()["filename"])
            times.append((at["file.stored"] - started) * 1000)
            noticed.append((seen - started) * 1000)
            parts["answered (receive, stage, record, publish)"].append(answered - started)
            parts["answered -> claimed (broker delivery, claim)"].append(
                at["file.processing"] - answered
            )
            parts["claimed -> stored (verify, push, settle)"].append(
                at["file.stored"] - at["file.processing"]
            )
            parts["stored -> seen by the client (its polling)"].append(seen - at["file.stored"])
            time.sleep(0.1)  # idle between uploads
    finally:
        api.stop()
        worker.stop()
        meta.stop()
    p50 = statistics.median(times)
    print("# P6 where the time goes (median ms):", flush=True)
    for name, values in parts.items():
        print(f"#   {name:50} {statistics.median(values) * 1000:6.1f}", flush=True)
    for name, figure in _worker_steps(bench, data).items():
        print(f"#     of which {name:41} {figure:6.1f}", flush=True)
    seen = statistics.median(noticed)
    return [
        Target("P6", "upload -> stored p50, idle stack, 100 KiB", p50, None, "ms", None,
               "<= 25 ms", p50 <= 25),
        Target("P6", "upload -> the client sees stored (polling 5 ms)", seen, None, "ms", None,
               "reported", True),
    ]  # fmt: skip


def _event_times(bench: Bench, name: str) -> dict[str, float]:
    """When each of the file's events happened (epoch seconds)."""
    with psycopg.connect(bench.database_url.replace("+psycopg", "")) as db:
        rows = db.execute(
            "SELECT e.type, e.at FROM file_events e JOIN files f ON f.id = e.file_id"
            " WHERE f.name = %s",
            (name,),
        ).fetchall()
    return {kind: at.timestamp() for kind, at in rows}


def _worker_steps(bench: Bench, data: bytes) -> dict[str, float]:
    """The worker's steps on one staged 100 KiB file, each timed alone (median of 20 ms)."""
    from common.files.pipeline.ingest import _digests
    from common.sniff import check_content
    from common.storage import PutRequest, from_settings

    path = bench.tmp / "p6-step.pdf"
    path.write_bytes(data)
    store = from_settings(bench.settings)
    request = PutRequest(
        key="p6-step.pdf",
        path=path,
        content_type="application/pdf",
        original_name="small.pdf",
        md5_hex=hashlib.md5(data).hexdigest(),
        metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    steps = {
        "sniff (libmagic, PDF check)": lambda: check_content(path, "pdf", max_image_pixels=10**8),
        "sha256 + md5": lambda: _digests(path),
        "push (PUT to the store)": lambda: store.put(request),
    }
    figures = {}
    for name, step in steps.items():
        step()
        durations = []
        for _ in range(20):
            began = time.perf_counter()
            step()
            durations.append(time.perf_counter() - began)
        figures[name] = statistics.median(durations) * 1000
    return figures


def a1_auth_cost(bench: Bench) -> list[Target]:
    """What authentication adds on the hot path: uploads (64 KiB, 8 clients) and a page of 100
    files, each with a JWT and with an API key, beside the same work on open v1: through v2
    (whose file objects carry four more fields, and whose page is a keyset page), and through
    v1's own handlers with V1_ACCESS=token (authentication and the owner filter alone). Figures
    are time per request (uploads: wall time / uploads), medians of rounds in rotating order."""
    import requests

    api = bench.api("a1-api")
    # The same API with v1 closed: v1's own handlers with a token measure authentication alone.
    closed = bench.api("a1-closed", replace(bench.settings, v1_access="token"))
    body = multipart.file_body("small.pdf", b"%PDF-1.4\n" + os.urandom(64 * KIB - 9))
    total = 8 if bench.quick else 240
    gets = 10 if bench.quick else 300
    try:
        bench.reset()
        account = {"username": "bench", "email": "bench@example.com", "password": "bench pass"}
        user_id = requests.post(f"{api.url}/api/v2/users", json=account).json()["id"]
        login = {"username": "bench", "password": "bench pass"}
        token = requests.post(f"{api.url}/api/v2/auth/token", json=login).json()["access_token"]
        jwt = {"Authorization": f"Bearer {token}"}
        key = requests.post(f"{api.url}/api/v2/keys", headers=jwt, json={"name": "b"}).json()
        as_key = {"Authorization": f"Bearer {key['key']}"}
        _insert_stored_rows(bench, 0, 1000)  # ownerless: what open v1 lists
        _insert_stored_rows(bench, 1000, 1000, owner_id=user_id)  # the bench user's
        variants = {
            "v1 open": (api.url, "/files/upload", "/files?limit=100", {}),
            "v2 JWT": (api.url, "/api/v2/files", "/api/v2/files?limit=100", jwt),
            "v2 key": (api.url, "/api/v2/files", "/api/v2/files?limit=100", as_key),
            "v1 JWT": (closed.url, "/files/upload", "/files?limit=100", jwt),
            "v1 key": (closed.url, "/files/upload", "/files?limit=100", as_key),
        }
        uploads: dict[str, list[float]] = {name: [] for name in variants}
        pages: dict[str, list[float]] = {name: [] for name in variants}
        for url, upload, _page, headers in variants.values():  # warm every path first
            post_many(url + upload, body, 16, 8, headers)
        names = list(variants)
        for round_ in range(bench.rounds()):
            # Each variant in every position across rounds: no order favours one.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                url, upload, page, headers = variants[name]
                _, elapsed = post_many(url + upload, body, total, 8, headers)
                uploads[name].append(elapsed / total * 1000)
                latencies, _ = asyncio.run(_get_many(url + page, gets, 20, headers))
                pages[name].append(statistics.median(latencies) * 1000)
    finally:
        api.stop()
        closed.stop()
    targets = []
    for label, figures in (("upload 64 KiB, 8 clients", uploads), ("page of 100 p50", pages)):
        base = statistics.median(figures["v1 open"])
        for name in ("v2 JWT", "v2 key", "v1 JWT", "v1 key"):
            figure = statistics.median(figures[name])
            ratio = figure / base
            scenario = f"{label}, {name} vs v1 open"
            targets.append(
                Target("A1", scenario, figure, base, "ms/req", ratio, "<= 1.1", ratio <= 1.1)
            )
    return targets


#: Where the machine-readable results go (BENCH_RESULTS moves them: the tests' quick run).
RESULTS = Path(os.environ.get("BENCH_RESULTS", Path(__file__).with_name("results.json")))


def _write_results(args, runs: list[list[Target]]) -> None:
    """``bench/results.json``: the targets, machine-readable, beside the printed table; with
    ``--runs``, each target's medians over the runs, judged, and every run's own figures."""
    document = {
        "machine": machine(),
        "quick": args.quick,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": len(runs),
        "targets": _over_runs(runs),
    }
    RESULTS.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _over_runs(runs: list[list[Target]]) -> list[dict]:
    """One record a target: the median of its runs' figures, passed when the majority of its
    runs passed, and ``runs``, each run's figures (a run cut short leaves its targets out)."""
    seen: dict[tuple[str, str], list[Target]] = {}
    for run in runs:
        for target in run:
            seen.setdefault((target.id, target.scenario), []).append(target)
    records = []
    for targets in seen.values():
        record = targets[0].record()
        for field, values in (
            ("product", [t.product for t in targets]),
            ("baseline", [t.baseline for t in targets]),
            ("ratio", [t.ratio for t in targets]),
        ):
            if None not in values:
                record[field] = round(statistics.median(values), 3)
        record["pass"] = sum(t.passed for t in targets) * 2 > len(targets)
        record["runs"] = [
            {k: v for k, v in t.record().items() if k in ("product", "baseline", "ratio", "pass")}
            for t in targets
        ]
        records.append(record)
    return records


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, Python {sys.version.split()[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers, one round (CI)")
    parser.add_argument("--only", help="comma-separated target ids, e.g. P1,P4")
    parser.add_argument(
        "--runs", type=int, default=1, help="run the scenarios this many times (the results "
        "file keeps each run's figures and their spread; the medians are judged)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    only = set(args.only.split(",")) if args.only else None
    scenarios = [
        ("P1", p1_acceptance),
        ("P2", p2_latency_slow_store),
        ("P3", p3_push_throughput),
        ("P4", p4_listing),
        ("P5", p5_memory),
        ("P6", p6_end_to_end),
        ("A1", a1_auth_cost),
        ("P7", live.p7_live_latency),
        ("P8", live.p8_idle_connections),
        ("P9", direct.p9_direct),
        ("F1", finding.f1_listing),
        ("F2", finding.f2_bulk_delete),
    ]
    print(f"# {machine()}{' (quick: figures not meaningful)' if args.quick else ''}", flush=True)
    runs: list[list[Target]] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(Path(tmp), args.quick)
        try:
            for run in range(args.runs):
                if args.runs > 1:
                    print(f"# run {run + 1} of {args.runs}", flush=True)
                runs.append([])
                for target_id, scenario in scenarios:
                    if only and target_id not in only:
                        continue
                    began = time.perf_counter()
                    result = scenario(bench)
                    print(f"# {target_id}: {time.perf_counter() - began:.1f} s", flush=True)
                    for target in result if isinstance(result, list) else [result]:
                        print(target.line(), flush=True)
                        runs[-1].append(target)
                    if RETRIED:
                        print(f"# {target_id}: uploads sent again after 503: {RETRIED.total()}")
                        RETRIED.clear()
        finally:
            bench.close()
            _write_results(args, runs)
    if args.runs > 1:
        print(f"# over {args.runs} runs: medians judged, each run's figure in brackets")
        for record in _over_runs(runs):
            figures = " ".join(  # the ratio where there is one, else the figure itself
                f"{r['ratio'] if r['ratio'] is not None else r['product']:g}"
                for r in record["runs"]
            )
            print(f"{record['id']:3} {record['scenario']:46} [{figures}]  "
                  f"{'PASS' if record['pass'] else 'FAIL'}", flush=True)  # fmt: skip
    # A FAIL is a figure to act on, not an error of the bench itself: the exit status is 0.


if __name__ == "__main__":
    main()

"""``python -m bench.faults [-n N]``: each fault scenario with N uploads, one line of figures each.

Every scenario starts its own Redis, S3 server (behind a TCP proxy), SQLite database, workers
and beat on free ports, injects its fault for real, lets the pipeline recover, and counts:

- accepted: uploads answered 201;
- stored / rejected / failed / deleted: their final states;
- lost: accepted uploads that reached none of those states (must be 0);
- objects: objects in the bucket (must equal stored: no duplicates, no orphans);
- recovery: seconds from the end of the fault (the dependency back, the worker killed) to
  the last file settled.

Timings are those of ``testkit.services.SHORTENED`` (each shortened there says why), except in
the scenarios marked shipped, which run with every setting at its default.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
from sqlalchemy import select

from api.services import services
from common.models import File
from common.tasks import INGEST
from testkit import multipart
from testkit.processes import PG_PORT
from testkit.services import FaultEnv, make_fault_env

FINAL = ("stored", "rejected", "failed", "deleted")
MIB = 1024 * 1024


def upload(client, data: bytes, name: str) -> str | None:
    body = multipart.file_body(name, data)
    reply = client.post("/files/upload", data=body, content_type=multipart.CONTENT_TYPE)
    return reply.get_json()["filename"] if reply.status_code == 201 else None


def payload(i: int, size: int = 2048) -> tuple[bytes, str]:
    """Mostly genuine PDFs-by-signature, every fifth a spoofed one (must end rejected)."""
    if i % 5 == 4:
        return b"<html>spoofed</html>", f"spoof{i}.pdf"
    return b"%PDF-1.4\n" + os.urandom(size), f"doc{i}.pdf"


def states(env: FaultEnv, names: list[str]) -> dict[str, str]:
    with env.db.session() as session:
        rows = session.execute(select(File.name, File.status).where(File.name.in_(names)))
        return {name: status.value for name, status in rows}


def settle(env: FaultEnv, names: list[str], timeout: float = 120, wanted=FINAL) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = states(env, names)
        if all(found.get(n) in wanted for n in names) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def objects(env: FaultEnv) -> int:
    store = env.direct_store()
    reply = store._client.list_objects_v2(Bucket=env.settings.s3_bucket)
    return reply.get("KeyCount", 0)


def kill_tree(pid: int) -> None:
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs([parent], timeout=10)


# -- scenarios: each returns the accepted names (and may start what it needs) ---------------


def worker_killed(env: FaultEnv, n: int) -> list[str]:
    env.proxy.bandwidth = MIB // 2  # a push of 1 MiB takes 2 s: some are in flight at the kill
    first = env.worker("first", queues="uploads")
    client = env.app().test_client()
    names = [upload(client, *payload(i, MIB)) for i in range(n)]
    time.sleep(1.5)
    kill_tree(first.process.pid)  # mid-push of some file, others still queued
    env.fault_over = time.monotonic()
    env.proxy.bandwidth = None
    env.worker("second")
    env.beat()
    return names


def redis_down(env: FaultEnv, n: int) -> list[str]:
    env.worker()
    env.beat()
    client = env.app().test_client()
    env.redis.stop()
    names = [upload(client, *payload(i)) for i in range(n)]
    env.redis.start()  # empty: only the outbox remembers
    env.fault_over = time.monotonic()
    return names


def store_down(env: FaultEnv, n: int) -> list[str]:
    env.settings = replace(env.settings, ingest_max_retries=30)
    env.worker()
    client = env.app().test_client()
    env.s3.stop()
    names = [upload(client, *payload(i)) for i in range(n)]
    time.sleep(3)
    env.s3.start()
    env.fault_over = time.monotonic()
    return names


def store_down_past_retries(env: FaultEnv, n: int) -> list[str]:
    env.settings = replace(env.settings, ingest_max_retries=1, retry_backoff_max=1)
    env.worker()
    app = env.app()
    client = app.test_client()
    env.s3.stop()
    names = [upload(client, *payload(i)) for i in range(n)]
    before = settle(env, names, timeout=60, wanted=("failed", "rejected"))
    env.note = f"failed before requeue={sum(v == 'failed' for v in before.values())}"
    env.s3.start()
    env.fault_over = time.monotonic()
    app.test_cli_runner().invoke(args=["requeue-failed", "--all"])
    return names


def duplicate_deliveries(env: FaultEnv, n: int) -> list[str]:
    env.worker("one")
    env.worker("two")
    app = env.app()
    client = app.test_client()
    names = [upload(client, *payload(i)) for i in range(n)]
    publisher = services(app).pipeline.publisher
    with env.db.session() as session:
        ids = session.scalars(select(File.id).where(File.name.in_(names))).all()
    for file_id in ids:
        for attempt in (1, 2):
            publisher.send(INGEST, file_id, attempt=attempt)
    return names


def lost_publish(env: FaultEnv, n: int) -> list[str]:
    from testkit.processes import free_port

    client = env.app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    names = [upload(client, *payload(i)) for i in range(n)]
    env.fault_over = time.monotonic()
    env.worker()
    env.beat()
    return names


def redis_emptied(env: FaultEnv, n: int) -> list[str]:
    import redis

    from common.queue import SENTINEL

    app = env.app()
    client = app.test_client()
    redis.Redis.from_url(env.settings.redis_url).set(SENTINEL, 1)  # a broker in service
    names = [upload(client, *payload(i)) for i in range(n)]  # queued: no worker yet
    services(app).pipeline.marks.flush()
    env.redis.stop()
    env.redis.start()  # without its data: the queued tasks are gone
    env.fault_over = time.monotonic()
    env.worker()
    env.beat()
    return names


def database_down_past_retries(env: FaultEnv, n: int) -> list[str]:
    """PostgreSQL cut off from the API and the workers for longer than every store retry."""
    from testkit.tcpproxy import TcpProxy

    line = TcpProxy(PG_PORT)
    env.closers.append(line.close)
    url = env.db.engine.url.set(port=line.port).render_as_string(hide_password=False)
    env.settings = replace(env.settings, database_url=url)
    client = env.app().test_client()
    names = [upload(client, *payload(i)) for i in range(n)]
    line.down()
    env.worker()
    env.beat()
    time.sleep(20)  # well past SHORTENED's retries
    line.up()
    env.fault_over = time.monotonic()
    return names


def store_silent(env: FaultEnv, n: int) -> list[str]:
    env.worker()
    client = env.app().test_client()
    env.proxy.silence()
    names = [upload(client, *payload(i)) for i in range(n)]
    time.sleep(5)
    env.proxy.up()
    env.fault_over = time.monotonic()
    return names


def delete_with_store_down(env: FaultEnv, n: int) -> list[str]:
    env.worker()
    client = env.app().test_client()
    names = [upload(client, *payload(i)) for i in range(n)]
    settle(env, [x for x in names if x], timeout=60)
    env.s3.stop()
    doomed = names[::2]
    for name in doomed:
        client.delete(f"/files/{name}")
    env.s3.start()
    env.fault_over = time.monotonic()
    kept = sum(v == "stored" for v in states(env, names).values())
    deadline = time.monotonic() + 60
    while objects(env) != kept and time.monotonic() < deadline:
        time.sleep(0.2)  # the workers remove the deleted files' objects
    return names


#: Scenarios that prove a recovery bound of the shipped settings run with all of them.
SHIPPED = {"worker SIGKILL mid-push", "redis emptied, tasks queued"}
#: Scenarios that need a database they can cut off: PostgreSQL behind a proxy.
POSTGRES = {"database down past the retries"}

SCENARIOS: dict[str, Callable[[FaultEnv, int], list[str]]] = {
    "worker SIGKILL mid-push": worker_killed,
    "redis down during uploads": redis_down,
    "store down, back before last retry": store_down,
    "store down past last retry + requeue": store_down_past_retries,
    "duplicate deliveries, 2 workers": duplicate_deliveries,
    "API gone between commit and publish": lost_publish,
    "redis emptied, tasks queued": redis_emptied,
    "database down past the retries": database_down_past_retries,
    "store silent, then back": store_silent,
    "delete with the store down": delete_with_store_down,
}


def run(name: str, scenario, n: int, database: str) -> str:
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        database = "postgres" if name in POSTGRES else database
        env = make_fault_env(Path(tmp), shipped=name in SHIPPED, database=database)
        try:
            started = time.monotonic()
            names = scenario(env, n)
            accepted = [x for x in names if x]
            final = settle(env, accepted, timeout=240)
            recovery = time.monotonic() - getattr(env, "fault_over", started)
            counts = {state: sum(v == state for v in final.values()) for state in FINAL}
            lost = len(accepted) - sum(counts.values())
            stored_objects = objects(env)
            note = getattr(env, "note", "")
        finally:
            env.close()
    return (
        f"{name:40} accepted={len(accepted):3} stored={counts['stored']:3} "
        f"rejected={counts['rejected']:3} failed={counts['failed']:3} lost={lost} "
        f"objects={stored_objects} recovery={recovery:.0f}s {note}"
    ).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="uploads per scenario")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", help="comma-separated words of the scenarios to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("werkzeug", "common", "api", "flask_limiter"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    wanted = [w.strip() for w in (args.only or "").split(",") if w.strip()]
    for name, scenario in SCENARIOS.items():
        if wanted and not any(word in name for word in wanted):
            continue
        print(run(name, scenario, args.n, args.database), flush=True)


if __name__ == "__main__":
    main()

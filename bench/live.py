"""Live status targets (docs/API.md, "Live status"):

- P7: a change committed to its event received by a connected WebSocket client, p50 and p99,
  on an idle stack; with the doorbell (as the API and the workers commit) and by the poll alone
  (a commit that never rings: the fallback's figure, reported).
- P8: one realtime process holding 2,000 idle WebSocket connections: its RSS, and the upload
  p99 while they are connected against the p99 without them, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import aiohttp
import psutil
import requests
from sqlalchemy import select

from common.db import Database
from common.files import states
from common.files.events import Doorbell
from common.models import File
from testkit import multipart
from testkit.processes import start_realtime

KIB = 1024


def _account(api_url: str, name: str) -> tuple[int, dict[str, str]]:
    account = {"username": name, "email": f"{name}@example.com", "password": "bench pass"}
    user_id = requests.post(f"{api_url}/api/v2/users", json=account).json()["id"]
    login = {"username": name, "password": "bench pass"}
    token = requests.post(f"{api_url}/api/v2/auth/token", json=login).json()["access_token"]
    return user_id, {"Authorization": f"Bearer {token}"}


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http") + "/api/v2/ws"


def p7_live_latency(bench):
    from bench.__main__ import Target, _insert_stored_rows, p99

    bench.reset()
    api = bench.api("p7-api")
    live = start_realtime(bench.settings, bench.tmp / "p7-realtime.log")
    rung, silent = Database(bench.database_url), Database(bench.database_url)
    rung.ring_with(Doorbell(bench.settings.redis_url))
    samples = 6 if bench.quick else 200
    try:
        user_id, auth = _account(api.url, "p7")
        _insert_stored_rows(bench, 0, 1, owner_id=user_id)
        with rung.session() as session:
            file_id = session.scalar(select(File.id))
        doorbell = asyncio.run(_latencies(live.url, auth, rung, file_id, samples, 0.05))
        # Commits at random points of the poll's second, not just after its last read.
        polled = asyncio.run(_latencies(live.url, auth, silent, file_id, samples // 2, 1.0))
    finally:
        live.stop()
        api.stop()
        rung.dispose()
        silent.dispose()
    p50, tail = statistics.median(doorbell), p99(doorbell)
    polled_p50 = statistics.median(polled)
    return [
        Target("P7", "commit -> WebSocket event p50 (doorbell)", p50, None, "ms", None,
               "<= 50 ms", p50 <= 50),
        Target("P7", "commit -> WebSocket event p99 (doorbell)", tail, None, "ms", None,
               "reported", True),
        Target("P7", "commit -> WebSocket event p50 (poll alone)", polled_p50, None, "ms", None,
               "reported", True),
    ]  # fmt: skip


async def _latencies(
    url: str, auth: dict, db: Database, file_id: int, count: int, spread: float
) -> list[float]:
    """Milliseconds from each commit's return to its event's arrival; commits ``spread``
    seconds apart at most, at random."""
    figures = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(_ws_url(url), headers=auth) as socket,
    ):
        assert (await socket.receive_json())["type"] == "ready"
        for n in range(count):
            await asyncio.sleep(random.uniform(0.01, spread))
            committed = await asyncio.to_thread(_change, db, file_id, n)
            while True:
                event = await socket.receive_json(timeout=10)
                if event.get("type") == "file.metadata" and event["file"]["metadata"].get("n") == n:
                    break
            figures.append((time.perf_counter() - committed) * 1000)
    return figures


def _change(db: Database, file_id: int, n: int) -> float:
    with db.session() as session:
        states.change(session, file_id, "metadata", extra={"n": n})
    return time.perf_counter()


def p8_idle_connections(bench):
    from bench.__main__ import Target, _post_many, p99

    api = bench.api("p8-api")
    live = start_realtime(bench.settings, bench.tmp / "p8-realtime.log")
    connections = 50 if bench.quick else 2000
    total = 16 if bench.quick else 400
    body = multipart.file_body("small.pdf", b"%PDF-1.4\n" + b"x" * (100 * KIB - 9))
    with_them: list[float] = []
    without: list[float] = []
    rss = 0.0
    try:
        bench.reset()
        _, uploader = _account(api.url, "p8-uploads")
        _, idle_auth = _account(api.url, "p8-idle")
        url = f"{api.url}/api/v2/files"

        async def run() -> float:
            await _post_many(url, body, 16, 8, uploader)  # warm
            held = 0.0
            for _ in range(bench.rounds()):
                latencies, _ = await _post_many(url, body, total, 8, uploader)
                without.append(p99(latencies) * 1000)
                # No connector limit: each WebSocket holds its connection.
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0)
                ) as session:
                    sockets = await _open(session, live.url, idle_auth, connections)
                    held = max(held, psutil.Process(live.process.pid).memory_info().rss)
                    latencies, _ = await _post_many(url, body, total, 8, uploader)
                    with_them.append(p99(latencies) * 1000)
                    for socket in sockets:
                        await socket.close()
            return held

        rss = asyncio.run(run()) / 2**20
    finally:
        live.stop()
        api.stop()
    base, figure = statistics.median(without), statistics.median(with_them)
    return [
        Target("P8", f"realtime RSS, {connections} idle WebSockets", rss, None, "MiB", None,
               "<= 200 MiB", rss <= 200),
        Target("P8", f"upload p99, {connections} idle WS vs none", figure, base, "ms",
               figure / base, "<= 1.1", figure / base <= 1.1),
    ]  # fmt: skip


async def _open(session: aiohttp.ClientSession, url: str, auth: dict, count: int) -> list:
    """``count`` authenticated WebSockets, each past its ``ready``, opened 100 at a time."""
    sockets = []

    async def one():
        socket = await session.ws_connect(_ws_url(url), headers=auth, heartbeat=None)
        assert (await socket.receive_json(timeout=30))["type"] == "ready"
        return socket

    for start in range(0, count, 100):
        sockets += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return sockets

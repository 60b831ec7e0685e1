"""Finding files at scale (``python -m bench --only F1,F2``), on PostgreSQL.

F1: one owner with 10k, 100k and 1M files (set-based inserts, ANALYZEd), 300 sequential
requests of each listing below; p50 and p99. Targets: each query's p99 at the largest N within
1.5x of the same query at the smallest (flat in N), and within 2x of the default page at the
same N. The EXPLAIN (ANALYZE, BUFFERS) of each query, built by the route's own code
(``api.v2.files.Listing``), is printed after the figures: which index serves it.

F2: a bulk delete of 1000 stored files: how long the request takes, and whether every object
is gone from the store once the workers have run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import parse_qs

import boto3
import psycopg
import requests

from api.services import services
from testkit import multipart

#: (label, query string) of the measured listings; (e) is built from (a)'s cursors.
QUERIES = [
    ("a default page", "limit=100"),
    ("b q=word in 0.1% of names", "limit=100&q=квартальный"),
    ("c tag= on 1% of files", "limit=100&tag=bench"),
    ("d stored images by -size", "limit=100&status=stored&content_type=image/*&sort=-size"),
    ("e 50th page of (a)", None),
]


def _account(url: str) -> tuple[int, dict[str, str]]:
    body = {"username": "finder", "email": "finder@example.com", "password": "finding things"}
    user_id = requests.post(f"{url}/api/v2/users", json=body).json()["id"]
    login = {"username": "finder", "password": "finding things"}
    token = requests.post(f"{url}/api/v2/auth/token", json=login).json()["access_token"]
    return user_id, {"Authorization": f"Bearer {token}"}


def _seed(database_url: str, owner_id: int, start: int, count: int) -> None:
    """Files ``start`` .. ``start + count - 1`` of one owner: newest first by number; a fifth
    are images; one in a thousand has the word in its name; one in a hundred the tag."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        conn.execute(
            """
            INSERT INTO files (name, original_name, search_name, extension, size, content_type,
                               status, sha256, md5, etag, metadata, attempts, uploaded_at,
                               stored_at, updated_at, owner_id)
            SELECT '20250101_000000_' || lpad(to_hex(g), 16, '0') || ext,
                   title || ext, title || ext, substr(ext, 2), (g::bigint * 7919) %% 1000003,
                   CASE WHEN ext = '.png' THEN 'image/png' ELSE 'application/pdf' END,
                   'stored', repeat('a', 64), repeat('b', 32), repeat('b', 32), '{}'::json, 1,
                   timestamp '2026-01-01' - g * interval '1 second', now(), now(), %s
            FROM (
                SELECT g,
                       CASE WHEN g %% 5 = 0 THEN '.png' ELSE '.pdf' END AS ext,
                       CASE WHEN g %% 1000 = 7 THEN 'квартальный отчёт ' || g
                            ELSE 'document ' || g END AS title
                FROM generate_series(%s::int, %s::int) AS g
            ) AS numbered
            """,
            (owner_id, start, start + count - 1),
        )
        conn.execute("INSERT INTO tags (name) VALUES ('bench') ON CONFLICT DO NOTHING")
        conn.execute(
            """
            INSERT INTO file_tags (file_id, tag_id, owner_id, uploaded_at)
            SELECT files.id, tags.id, files.owner_id, files.uploaded_at FROM files, tags
            WHERE tags.name = 'bench' AND files.owner_id = %s AND files.id %% 100 = 0
              AND files.id > (SELECT coalesce(max(file_id), 0) FROM file_tags)
            """,
            (owner_id,),
        )
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE files")
        conn.execute("VACUUM ANALYZE file_tags")


async def _gets(url: str, headers: dict, total: int) -> list[float]:
    from bench.__main__ import _get_many

    latencies, _ = await _get_many(url, total, unmeasured=20, headers=headers)
    return latencies


def _fiftieth_page(url: str, headers: dict) -> str:
    query = "limit=100"
    for _ in range(49):
        cursor = requests.get(f"{url}/api/v2/files?{query}", headers=headers).json()["next_cursor"]
        query = "limit=100&cursor=" + cursor
    return query


def _explain(bench, owner_id: int, query_string: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the page query the route builds for ``query_string``."""
    from api import create_app
    from api.auth import LOGIN_SCOPES, Caller
    from api.v2.files import Listing
    from api.v2.schemas import FileListQuery

    app = create_app(bench.settings)
    try:
        lists = ("tag", "status")  # the repeatable parameters
        params = {k: v if k in lists else v[0] for k, v in parse_qs(query_string).items()}
        with app.test_request_context():
            args = FileListQuery.model_validate(params)
            listing = Listing.of(args, Caller(owner_id, "finder", False, LOGIN_SCOPES))
            compiled = listing.query.compile(
                dialect=_dialect(), compile_kwargs={"render_postcompile": True}
            )
        with psycopg.connect(bench.database_url.replace("+psycopg", "")) as conn:
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + str(compiled), compiled.params
            ).fetchall()
        return "\n".join(row[0] for row in rows)
    finally:
        services(app).pipeline.close()


def _dialect():
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    return PGDialect_psycopg()


def f1_listing(bench) -> list:
    from bench.__main__ import Target, p99

    api = bench.api("f1-api")
    sizes = (6_000, 10_000) if bench.quick else (10_000, 100_000, 1_000_000)
    total = 10 if bench.quick else 300
    figures: dict[tuple[str, int], tuple[float, float]] = {}
    explains: list[str] = []
    try:
        bench.reset()
        owner_id, headers = _account(api.url)
        seeded = 0
        for size in sizes:
            started = time.perf_counter()
            _seed(bench.database_url, owner_id, seeded, size - seeded)
            seeded = size
            print(f"# seeded {size:,} files in {time.perf_counter() - started:.0f} s", flush=True)
            for label, query in QUERIES:
                query = query or _fiftieth_page(api.url, headers)
                latencies = asyncio.run(_gets(f"{api.url}/api/v2/files?{query}", headers, total))
                figures[label, size] = (
                    statistics.median(latencies) * 1000,
                    p99(latencies) * 1000,
                )
                if size == sizes[-1]:
                    explains.append(f"## {label} ({size:,} files)\n{query}\n")
                    explains.append(_explain(bench, owner_id, query))
    finally:
        api.stop()
    targets = []
    smallest, largest = sizes[0], sizes[-1]
    for label, _query in QUERIES:
        for size in sizes:
            p50, p99_ = figures[label, size]
            flat = p99_ / figures[label, smallest][1]
            to_default = p99_ / figures[QUERIES[0][0], size][1]
            ok = (size != largest or flat <= 1.5) and to_default <= 2
            targets.append(
                Target(
                    "F1",
                    f"{label}, {size:,}: p50 {p50:.1f} ms, p99",
                    p99_,
                    figures[label, smallest][1],
                    "ms",
                    flat,
                    f"<=1.5x, {to_default:.2f}<=2x",
                    ok,
                )
            )
    print("# EXPLAIN of each query at the largest N\n" + "\n".join(explains), flush=True)
    return targets


def f2_bulk_delete(bench) -> list:
    from bench.__main__ import Target, post_many

    count = 20 if bench.quick else 1000
    api = bench.api("f2-api")
    worker = bench.worker("f2-worker", "uploads,metadata", 4)
    try:
        bench.reset()
        _owner, headers = _account(api.url)
        body = multipart.file_body("doc.pdf", b"%PDF-1.4\n" + b"x" * 1024)
        post_many(f"{api.url}/api/v2/files", body, count, 8, headers)
        names = _all_names(api.url, headers)
        deadline = time.monotonic() + 300
        while bench.stored_count() < count and time.monotonic() < deadline:
            time.sleep(0.5)
        objects_before = _objects(bench, names)
        started = time.perf_counter()
        reply = requests.post(
            f"{api.url}/api/v2/files/bulk",
            json={"action": "delete", "names": names},
            headers=headers,
        )
        elapsed = (time.perf_counter() - started) * 1000
        assert reply.json()["succeeded"] == count, reply.text
        deadline = time.monotonic() + 120
        while _objects(bench, names) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _objects(bench, names)
    finally:
        worker.stop()
        api.stop()
    gone = f"{objects_before} objects before, {left} after the workers"
    return [
        Target(
            "F2",
            f"bulk delete of {count} files ({gone})",
            elapsed,
            None,
            "ms",
            None,
            "< 1000 ms, 0 left",
            elapsed < 1000 and left == 0 and objects_before == count,
        )
    ]


def _all_names(url: str, headers: dict) -> list[str]:
    names, query = [], "limit=1000"
    while True:
        page = requests.get(f"{url}/api/v2/files?{query}", headers=headers).json()
        names += [f["name"] for f in page["items"]]
        if not page["next_cursor"]:
            return names
        query = "limit=1000&cursor=" + page["next_cursor"]


def _objects(bench, names: list[str]) -> int:
    """How many of ``names`` have an object in the store (earlier targets leave theirs)."""
    s3 = boto3.client("s3", endpoint_url=bench.moto.url, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bench.settings.s3_bucket)
    wanted = set(names)
    return sum(1 for page in pages for item in page.get("Contents", []) if item["Key"] in wanted)

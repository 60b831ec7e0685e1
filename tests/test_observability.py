"""Structured logs with request and task ids; Prometheus metrics."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import redis
import requests

from api import create_app
from tests.conftest import (
    REDIS_SERVER,
    close_app,
    eventually,
    start_gunicorn,
    start_worker,
    wait_for_status,
)


def json_lines(path) -> list[dict]:
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def test_api_logs_json_lines_with_the_request_id(clean_stack, tmp_path):
    server = start_gunicorn(clean_stack.settings, tmp_path / "api.log", LOG_FORMAT="json")
    try:
        echoed = requests.get(f"{server.url}/users", headers={"X-Request-ID": "abc-123"}, timeout=5)
        generated = requests.get(f"{server.url}/nowhere", timeout=5)
        assert echoed.headers["X-Request-ID"] == "abc-123"
        rid = generated.headers["X-Request-ID"]
        assert len(rid) == 32
        bad = requests.get(f"{server.url}/", headers={"X-Request-ID": "x" * 500}, timeout=5)
        assert bad.headers["X-Request-ID"] != "x" * 500

        def logged():
            lines = json_lines(server.log)
            ids = {line.get("request_id"): line for line in lines}
            return "abc-123" in ids and rid in ids

        assert eventually(logged, timeout=10)
        lines = {line.get("request_id"): line for line in json_lines(server.log)}
        assert lines["abc-123"]["path"] == "/users" and lines["abc-123"]["status"] == 200
        assert lines[rid]["status"] == 404 and lines[rid]["level"] == "INFO"
        text = [raw for raw in server.log.read_text().splitlines() if raw.strip()]
        assert all(raw.startswith("{") for raw in text), text[:3]
    finally:
        server.stop()


def test_worker_logs_json_lines_with_the_task_id(clean_stack, redis_db, tmp_path):
    # A worker of its own, on a Redis database the stack's worker does not read.
    settings = replace(
        clean_stack.settings, redis_url=f"{REDIS_SERVER}/{redis_db + 1}", log_format="json"
    )
    redis.Redis.from_url(settings.redis_url).flushdb()
    worker = start_worker(settings, tmp_path / "worker.log")
    app = create_app(settings)
    try:
        reply = app.test_client().post(
            "/files/upload",
            data={"file": (io.BytesIO(b"logged"), "a.txt")},
            content_type="multipart/form-data",
        )
        wait_for_status(clean_stack.db, reply.get_json()["filename"], {"stored"})

        def task_lines():
            return [line for line in json_lines(worker.log) if line.get("task_id")]

        assert eventually(
            lambda: any(line["task_id"].startswith("ingest-") for line in task_lines())
        )
    finally:
        worker.stop()
        close_app(app)


def test_metrics_count_uploads_latency_and_files_by_status(client, clean_stack):
    client.post(
        "/files/upload",
        data={"file": (io.BytesIO(b"counted"), "a.txt")},
        content_type="multipart/form-data",
    )
    client.post(
        "/files/upload",
        data={"file": (io.BytesIO(b"MZ"), "a.exe")},
        content_type="multipart/form-data",
    )
    reply = client.get("/metrics")
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    assert "uploads_accepted_total" in text
    assert 'uploads_refused_total{code="EXTENSION_NOT_ALLOWED"}' in text
    assert "upload_bytes_total" in text
    assert 'http_request_duration_seconds_bucket{endpoint="/files/upload"' in text
    assert 'pipeline_files{status="' in text


def test_metrics_under_gunicorn_aggregate_processes(clean_stack, tmp_path):
    server = start_gunicorn(clean_stack.settings, tmp_path / "api.log", GUNICORN_WORKERS="2")
    try:
        for _ in range(6):
            requests.get(f"{server.url}/users", timeout=5)
        text = requests.get(f"{server.url}/metrics", timeout=5).text
        line = next(
            raw
            for raw in text.splitlines()
            if raw.startswith("http_request_duration_seconds_count") and 'endpoint="/users"' in raw
        )
        assert float(line.rsplit(" ", 1)[1]) == 6
    finally:
        server.stop()

"""Structured logs with request and task ids; Prometheus metrics."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace

import redis
import requests

from api import create_app
from api.services import services
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
        # One line a request, and never its query string (signatures, cursors).
        secret = requests.get(f"{server.url}/files?cursor=SECRET1&signature=SECRET2", timeout=5)
        rid = secret.headers["X-Request-ID"]
        assert eventually(lambda: rid in server.log.read_text(), timeout=10)
        time.sleep(0.5)  # a second line, were there one, is written by then
        log = server.log.read_text()
        assert "SECRET" not in log
        assert len([raw for raw in log.splitlines() if "/files" in raw]) == 1
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


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels in Prometheus text (0 when there
    is no such series yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_count_uploads_latency_and_files_by_status(client, clean_stack):
    before = client.get("/metrics").get_data(as_text=True)
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
    after = reply.get_data(as_text=True)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("uploads_accepted_total") == 1
    assert grew("upload_bytes_total") == len(b"counted")
    assert grew("uploads_refused_total", code="EXTENSION_NOT_ALLOWED") == 1
    assert grew("http_request_duration_seconds_count", endpoint="/files/upload") == 2
    counted = sum(
        metric(after, "pipeline_files", status=s) for s in ("pending", "processing", "stored")
    )
    assert counted == 1  # the one file in the database, whichever state it has reached


def test_unknown_methods_and_paths_add_no_series(client):
    for i in range(5):
        client.open(f"/x{i}", method=f"FOOBAR{i}")
        client.get(f"/no/such/path/{i}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "FOOBAR" not in text and "/no/such/path" not in text and "/x1" not in text
    assert metric(text, "http_request_duration_seconds_count", method="OTHER") >= 5
    assert metric(text, "http_request_duration_seconds_count", endpoint="unmatched") >= 10


def test_metrics_are_served_only_to_allowed_networks(app):
    client = app.test_client()
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics").status_code == 200  # loopback, the default
    refused = client.get("/metrics", environ_base=outside)
    assert refused.status_code == 404 and refused.get_json()["code"] == "NOT_FOUND"
    allowed = replace(services(app).settings, metrics_allow=("203.0.113.0/24",))
    services(app).settings = allowed
    assert client.get("/metrics", environ_base=outside).status_code == 200
    assert client.get("/metrics").status_code == 404


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


def test_control_characters_in_a_request_cannot_forge_a_log_line(clean_stack, tmp_path):
    settings = replace(clean_stack.settings, log_format="text")
    server = start_gunicorn(settings, tmp_path / "api.log")
    forged = "2026-01-01 00:00:00,000 INFO api.access [x] GET / 200"
    try:
        path = "/files/a%0a" + forged.replace(" ", "%20") + "%0d%e2%80%a8/info"
        assert requests.get(server.url + path, timeout=5).status_code == 404
        requests.get(server.url + "/", timeout=5)  # one more line after it
    finally:
        server.stop()
    lines = (tmp_path / "api.log").read_text().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    logged = next(line for line in lines if "/files/a" in line and "api.access" in line)
    assert "/files/a\\x0a2026-01-01" in logged and "\\x0d\\u2028/info 404" in logged

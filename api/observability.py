"""Request ids, one log line per request, and Prometheus metrics at ``/metrics``.

Under gunicorn the metrics of all worker processes are aggregated through
PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets it up); elsewhere the process's own registry is
served. File counts by status come from the database at scrape time, so they include what the
workers decided (stored, rejected, failed).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
import uuid

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from api import errors, services
from common.files import queries
from common.logs import request_id

log = logging.getLogger("api.access")
bp = Blueprint("metrics", __name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Methods that get a label of their own; any other (``FOOBAR``) is counted as ``OTHER``, so
#: that a client cannot add series to /metrics.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

UPLOADS_ACCEPTED = Counter("uploads_accepted", "Uploads answered 201")
UPLOAD_BYTES = Counter("upload_bytes", "Bytes of accepted uploads")
UPLOADS_REFUSED = Counter("uploads_refused", "Uploads refused by the API", ["code"])
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer a request",
    ["method", "endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def init_observability(app: Flask) -> None:
    """Register before the rate limiter, so that refused requests have ids and log lines too."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_forget)
    app.register_blueprint(bp)


def _start() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.request_token = request_id.set(g.request_id)
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    rid = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-ID"] = rid
    elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    REQUEST_LATENCY.labels(method, endpoint, response.status_code).observe(elapsed)
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "request_id": rid,
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "remote_addr": request.remote_addr,
        },
    )
    return response


def _forget(_exc) -> None:
    token = g.pop("request_token", None)
    if token is not None:
        request_id.reset(token)


@bp.get("/metrics")
def metrics():
    if not _may_read_metrics(request.remote_addr):
        raise errors.NOT_FOUND()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry) + generate_latest(_file_counts())
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _may_read_metrics(address: str | None) -> bool:
    """METRICS_ALLOW holds the client's address (IPv4-mapped IPv6 as its IPv4)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    allowed = services.settings().metrics_allow
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allowed)


def _file_counts() -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("pipeline_files", "Files by status", ["status"], registry=registry)
    db = services.pipeline().db
    with db.reading() as session:
        for status, count in queries.count_by_status(session).items():
            gauge.labels(status.value).set(count)
    return registry

"""gunicorn settings, read automatically by ``gunicorn 'api:create_app()'`` from this directory.

api.errors is imported (below) before PROMETHEUS_MULTIPROC_DIR is set: it must not import
prometheus_client at module level, or the metrics would stay per process (api/errors.py).

Threads, not just processes: an upload holds its thread while it streams to disk, and a
``Prefer: wait`` request while the worker pushes. Environment variables override (GUNICORN_*).
"""

import functools
import json
import os
import shutil
import socket
import tempfile

from gunicorn import util as gunicorn_util

from api import tuning
from api.errors import HTTP_MESSAGES, INTERNAL_ERROR
from api.multipart import FRAMING_ALLOWANCE
from common.logs import dict_config
from common.settings import Settings

# Loopback by default: clients reach the API through the front proxy (deploy/nginx), never
# gunicorn itself. Containers bind their own network (Dockerfile), still behind the proxy.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 20
keepalive = 5
# Each worker listens on a socket of its own (SO_REUSEPORT: gunicorn binds it in the worker)
# and the kernel spreads new connections over them. On one shared socket the worker that wakes
# first accepts whatever is waiting: eight kept-alive clients, or the front proxy's kept-alive
# upstream connections, all landed on one of two processes in a third of the bench's rounds,
# which then served them at about half the rate (bench/RESULTS.md). GUNICORN_REUSE_PORT=0
# shares one socket again. Either way a server started on an address another one listens on
# stops (``on_starting``) instead of sharing its connections with it.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1") != "0"
limit_request_line = 8190  # gunicorn's maximum; longer request lines get a JSON 414
# A header field may be up to 128 KiB, so that an oversized Authorization value reaches the app
# and is refused like any bad token (401), not by gunicorn (431); at most 50 fields (default
# 100) keep the most a request's headers can hold at 6.4 MiB.
limit_request_field_size = 128 * 1024
limit_request_fields = 50
# gunicorn's own lines go through the app's handler: JSON objects when LOG_FORMAT=json.
_settings = Settings.from_env_or_exit()  # one line, as the app and the workers print it
# The app logs one line per request itself (with its request id, without the query string,
# which may hold a signed URL's signature or a cursor); gunicorn's would repeat it, so it
# writes none unless GUNICORN_ACCESSLOG asks, and then without the query string either.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s'
logconfig_dict = dict_config(_settings.log_format, access=accesslog is not None)

# Metrics of all worker processes, aggregated (prometheus_client multiprocess mode).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="api-metrics-")


def on_starting(server):
    """Refuse to start on an address in use or on a store that can never work (one line, no
    traceback)."""
    from common.storage import from_settings, refusal_at_start

    for address in server.cfg.address:
        if _in_use(address):
            print(f"error: {address[0]}:{address[1]} is in use by another server", flush=True)
            raise SystemExit(2)
    settings = Settings.from_env()
    reason = refusal_at_start(from_settings(settings))
    if reason:
        print(f"error: the object store refuses {settings.s3_bucket!r}: {reason}", flush=True)
        raise SystemExit(2)


def when_ready(server):
    """gunicorn's "Listening at" line names the master's sockets: with a socket per process
    (``reuse_port``) it has none, so the address is said here."""
    if server.cfg.reuse_port:
        addresses = ", ".join(f"http://{bind}" for bind in server.cfg.bind)
        server.log.info("Each process listens at %s (SO_REUSEPORT)", addresses)


def _in_use(address) -> bool:
    """Whether something listens on a TCP ``address``: each worker binds its own socket with
    SO_REUSEPORT, which another server's SO_REUSEPORT socket on that address would not stop
    (a stale process of an earlier run would quietly serve part of the requests)."""
    if not isinstance(address, tuple):  # a Unix socket: gunicorn checks it itself
        return False
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
        try:
            probe.bind(address[:2])
        except OSError:
            return True
    return False


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


# What leans on gunicorn's, glibc's and the collector's internals is in api/tuning.py, each
# trick with its switch (API_TUNING_OFF) and a test that it still applies.
tuning.apply_body_chunk(int(os.environ.get("GUNICORN_MAX_BODY_CHUNK", tuning.BODY_CHUNK)))
tuning.apply_hmac_only_jwt()

_UPLOAD_PATH = "/files/upload"


def pre_request(worker, req):
    """Close the connection after an upload whose body may go unread.

    The API stops reading at the size limit; on a kept-alive connection gunicorn would then
    read (and discard) the rest of the body, however large, before the next request.
    """
    if req.method != "POST" or req.path != _UPLOAD_PATH:
        return
    headers = dict(req.headers)
    if "TRANSFER-ENCODING" in headers:
        req.force_close()
        return
    length = headers.get("CONTENT-LENGTH", "0")
    if not length.isdigit() or int(length) > _body_limit():
        req.force_close()


@functools.cache
def _body_limit() -> int:
    return Settings.from_env().max_upload_bytes + FRAMING_ALLOWANCE


def _json_error(sock, status_int, reason, mesg):
    """gunicorn's own answers (a malformed request it never hands to the app) in the API's JSON
    error shape instead of its HTML page; gunicorn has no setting for this, so its writer is
    replaced here."""
    code, message = HTTP_MESSAGES.get(status_int, INTERNAL_ERROR)
    body = json.dumps({"error": message, "code": code}, ensure_ascii=False).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


tuning.apply_json_errors(_json_error)


def post_worker_init(worker):
    """Exempt everything the application loaded from garbage collection (api/tuning.py)."""
    tuning.apply_gc_freeze()


def post_fork(server, worker):
    """Keep a worker's resident memory where its live data is (api/tuning.py, ``malloc``)."""
    tuning.apply_malloc()

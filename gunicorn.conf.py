"""gunicorn settings, read automatically by ``gunicorn 'api:create_app()'`` from this directory.

Threads, not just processes: an upload holds its thread while it streams to disk, and a
``Prefer: wait`` request while the worker pushes. Environment variables override (GUNICORN_*).
"""

import functools
import os

from common.settings import Settings
from common.staging import FRAMING_ALLOWANCE

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")

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

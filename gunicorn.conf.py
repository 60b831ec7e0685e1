"""gunicorn settings, read automatically by ``gunicorn 'api:create_app()'`` from this directory.

Threads, not just processes: an upload holds its thread while it streams to disk, and a
``Prefer: wait`` request while the worker pushes. Environment variables override (GUNICORN_*).
"""

import functools
import os
import shutil
import tempfile

from common.logs import dict_config
from common.settings import Settings
from common.staging import FRAMING_ALLOWANCE

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 20
keepalive = 5
# gunicorn's own lines go through the app's handler: JSON objects when LOG_FORMAT=json.
logconfig_dict = dict_config(Settings.from_env().log_format)
# The app logs one line per request itself (with its request id); gunicorn's would repeat it.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None

# Metrics of all worker processes, aggregated (prometheus_client multiprocess mode).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="api-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


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

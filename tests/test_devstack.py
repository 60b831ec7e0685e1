"""README command 1 as a user runs it: the whole stack, an upload with curl, a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import requests

from tests.conftest import ROOT, eventually, free_port


def test_dev_stack_runs_stores_and_stops_cleanly(tmp_path):
    api_port, flower_port, redis_port = free_port(), free_port(), free_port()
    realtime_port = free_port()
    var = tmp_path / "var"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "REDIS_", "STORAGE_", "STAGING_", "S3_"))
    } | {
        "VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var}/app.db",
        "STORAGE_DIR": str(var / "storage"),
        "STAGING_DIR": str(var / "staging"),
        # Nothing listens here, so the stack must start its own redis-server.
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
        "REALTIME_PORT": str(realtime_port),
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        stack = subprocess.Popen(
            [str(ROOT / "scripts" / "dev-stack")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    api = f"http://127.0.0.1:{api_port}"
    try:
        assert eventually(lambda: _get(f"{api}/") == 200, timeout=60), log.read_text()
        assert eventually(lambda: _get(f"http://127.0.0.1:{flower_port}/") == 200, timeout=30)
        live = f"http://127.0.0.1:{realtime_port}"
        assert eventually(lambda: _get(f"{live}/healthz") == 200, timeout=30), log.read_text()
        where = requests.get(f"{api}/api/v2", timeout=5).json()
        assert where["events_url"] == f"{live}/api/v2/events"
        document = tmp_path / "document.txt"
        document.write_text("hello from curl\n")
        upload = subprocess.run(
            ["curl", "-s", "-X", "POST", f"{api}/files/upload", "-F", f"file=@{document}"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        name = json.loads(upload.stdout)["filename"]
        assert eventually(
            lambda: (
                requests.get(f"{api}/files/{name}/info", timeout=5).json()["status"] == "stored"
            ),
            timeout=30,
        ), log.read_text()
        url = requests.get(f"{api}/files/{name}/download", timeout=5).json()["download_url"]
        assert requests.get(url, timeout=5).content == b"hello from curl\n"
        started = psutil.Process(stack.pid).children(recursive=True)
        assert len(started) >= 5
        # A local stack: every port it opened listens on loopback only.
        listening = {
            (conn.laddr.ip, conn.laddr.port)
            for process in started
            for conn in process.net_connections("inet")
            if conn.status == psutil.CONN_LISTEN
        }
        assert {port for _, port in listening} >= {api_port, flower_port, redis_port, realtime_port}
        assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(60)
    time.sleep(1)
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [p.cmdline() for p in left]
    assert _get(f"{api}/") is None


def _get(url):
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None

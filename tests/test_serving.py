"""How gunicorn (gunicorn.conf.py, as shipped) hands connections to the API's processes."""

from __future__ import annotations

import http.client
import socket

import psutil

from testkit.processes import migrate, settings_for
from tests.conftest import start_gunicorn


def test_kept_alive_connections_are_spread_over_the_processes(tmp_path):
    """Sixteen clients that connect at once and keep their connections (as a load generator or
    the front proxy's upstream pool does) are served by both processes. With one shared
    listening socket (GUNICORN_REUSE_PORT=0) the process that woke first took all sixteen in
    five runs of six."""
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(database_url)
    settings = settings_for(tmp_path, database_url=database_url)
    api = start_gunicorn(settings, tmp_path / "gunicorn.log", GUNICORN_WORKERS="2")
    host, port = api.url.removeprefix("http://").split(":")
    clients = []
    try:
        workers = psutil.Process(api.process.pid).children()
        assert len(workers) == 2
        # Every connection is made (and waits in the kernel) before any is used.
        clients = [socket.create_connection((host, int(port)), timeout=10) for _ in range(16)]
        for sock in clients:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        for sock in clients:
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            assert reply.status == 200 and not reply.will_close
            reply.read()
        served = {
            worker.pid: sum(
                1
                for c in worker.net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == int(port)
            )
            for worker in workers
        }
        assert sum(served.values()) == 16
        assert all(served.values()), served
    finally:
        for sock in clients:
            sock.close()
        api.stop()

"""nginx with the shipped configuration (deploy/nginx), for the tests and the bench: Debian's
package (``scripts/ensure-services`` installs it when missing), configured exactly as shipped."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from deploy.nginx.__main__ import render, values_from
from testkit.processes import eventually


def start_nginx(
    tmp: Path, port: int, upstream: str, realtime: str = "127.0.0.1:9", store: dict | None = None
) -> subprocess.Popen:
    """nginx with the shipped configuration; ``store``: STORE_UPSTREAM and S3_BUCKET."""
    conf = tmp / "nginx.conf"
    values = values_from(
        {"LISTEN": f"127.0.0.1:{port}", "API_UPSTREAM": upstream, "REALTIME_UPSTREAM": realtime}
        | (store or {})
    )
    conf.write_text(render(values))
    with open(tmp / "nginx.log", "wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            ["nginx", "-p", str(tmp), "-c", str(conf), "-g", f"pid {tmp}/nginx.pid; daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if not eventually(lambda: _listening(port), timeout=10):
        process.kill()
        raise RuntimeError((tmp / "nginx.log").read_text())
    return process


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False

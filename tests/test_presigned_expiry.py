"""Presigned URLs against a store that checks their expiry, which moto does not: s3rver (npm),
in path-style and virtual-hosted addressing.

s3rver checks a SigV4 URL's X-Amz-Date and X-Amz-Expires and its access key, but does not
recompute the signature itself (its source says so); that the signature is the one AWS expects
is checked against botocore's own presigner (tests/test_storage_contract.py). No store that
recomputes SigV4 query signatures installs from the registries this project uses.

s3rver's access key and secret are both ``S3RVER``; the virtual-hosted bucket is reached as
``<bucket>.s3.test`` (its ``--service-endpoint test``), by connecting to loopback with that
Host header, as a client whose DNS names the store would.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from common.storage.s3 import S3Storage
from tests.conftest import ROOT, eventually, free_port
from tests.test_storage_contract import put

S3RVER = ROOT / "tests" / "s3rver" / "node_modules" / ".bin" / "s3rver"
BUCKET = "verified"


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory) -> Iterator[int]:
    port = free_port()
    data = tmp_path_factory.mktemp("s3rver")
    process = subprocess.Popen(
        [
            *(str(S3RVER), "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent"),
            *("--service-endpoint", "test", "--configure-bucket", BUCKET),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    answering = lambda: _status(f"http://127.0.0.1:{port}/", {}) is not None  # noqa: E731
    assert eventually(answering, timeout=20), "s3rver did not start"
    yield port
    process.terminate()
    process.wait(10)


def _status(url: str, headers: dict) -> int | None:
    try:
        return requests.get(url, headers=headers, timeout=5).status_code
    except requests.RequestException:
        return None


def fetch(url: str, port: int) -> requests.Response:
    """GET a URL on loopback, with the Host its URL names (bucket.s3.test resolves nowhere)."""
    parts = urlsplit(url)
    local = url.replace(f"{parts.scheme}://{parts.netloc}", f"http://127.0.0.1:{port}", 1)
    return requests.get(local, headers={"Host": parts.netloc}, timeout=10)


@pytest.fixture
def s3rver_keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_presigned_urls_serve_the_object_until_they_expire(s3rver, s3rver_keys, style, tmp_path):
    endpoint = f"http://s3.test:{s3rver}" if style == "virtual" else f"http://127.0.0.1:{s3rver}"
    storage = S3Storage(BUCKET, endpoint_url=f"http://127.0.0.1:{s3rver}")  # the workers' push
    key, _ = put(storage, tmp_path, data=b"%PDF-1.4 verified")
    signer = S3Storage(BUCKET, endpoint_url=endpoint, addressing_style=style)

    url = signer.presign_get(key, 60)
    host = urlsplit(url).netloc
    assert host == (f"{BUCKET}.s3.test:{s3rver}" if style == "virtual" else f"127.0.0.1:{s3rver}")
    reply = fetch(url, s3rver)
    assert reply.status_code == 200 and reply.content == b"%PDF-1.4 verified"
    assert reply.headers["Content-Type"] == "application/pdf"

    unknown_key = url.replace("X-Amz-Credential=S3RVER", "X-Amz-Credential=NOBODY")
    assert fetch(unknown_key, s3rver).status_code == 403

    expiring = signer.presign_get(key, 1)
    assert fetch(expiring, s3rver).status_code == 200
    time.sleep(2.1)
    refused = fetch(expiring, s3rver)
    assert refused.status_code == 403 and b"expired" in refused.content

"""Presigned URLs against a store that checks them as S3 does, which moto does not: SeaweedFS
recomputes each SigV4 query signature and checks its expiry, in path-style and virtual-hosted
addressing. The virtual-hosted bucket is reached as ``<bucket>.s3.test`` (its
``-s3.domainName``), by connecting to loopback with that Host header, as a client whose DNS
names the store would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from common.storage.s3 import S3Storage
from testkit.seaweed import SeaweedS3
from tests.test_storage_contract import put

BUCKET = "verified"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[int]:
    """The port of a SeaweedFS S3 server serving virtual-hosted buckets under s3.test."""
    tmp = tmp_path_factory.mktemp("seaweed-vhost")
    server = SeaweedS3(tmp, tmp / "weed.log", "-s3.domainName=s3.test")
    S3Storage(BUCKET, endpoint_url=server.url).ensure_bucket()
    yield int(server.url.rpartition(":")[2])
    server.stop()


def fetch(url: str, port: int) -> requests.Response:
    """GET a URL on loopback, with the Host its URL names (bucket.s3.test resolves nowhere)."""
    parts = urlsplit(url)
    local = url.replace(f"{parts.scheme}://{parts.netloc}", f"http://127.0.0.1:{port}", 1)
    return requests.get(local, headers={"Host": parts.netloc}, timeout=10)


def _signed_at(url: str) -> float:
    """When a presigned URL was signed (its X-Amz-Date), as a Unix time."""
    stamp = parse_qs(urlsplit(url).query)["X-Amz-Date"][0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def _code(reply: requests.Response) -> str:
    return reply.text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in reply.text else ""


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_presigned_urls_serve_the_object_until_they_expire(store, style, tmp_path):
    endpoint = f"http://s3.test:{store}" if style == "virtual" else f"http://127.0.0.1:{store}"
    storage = S3Storage(BUCKET, endpoint_url=f"http://127.0.0.1:{store}")  # the workers' push
    key, _ = put(storage, tmp_path, data=b"%PDF-1.4 verified")
    signer = S3Storage(BUCKET, endpoint_url=endpoint, addressing_style=style)

    url = signer.presign_get(key, 60)
    host = urlsplit(url).netloc
    assert host == (f"{BUCKET}.s3.test:{store}" if style == "virtual" else f"127.0.0.1:{store}")
    reply = fetch(url, store)
    assert reply.status_code == 200 and reply.content == b"%PDF-1.4 verified"
    assert reply.headers["Content-Type"] == "application/pdf"

    # The name a URL signs; another name, a changed signature, an unknown key: refused.
    named = signer.presign_get(key, 60, filename="report.pdf")
    assert fetch(named, store).headers["Content-Disposition"].endswith("report.pdf")
    tampered = named.replace("report.pdf", "other.pdf").replace("report", "other")
    assert fetch(tampered, store).status_code == 403
    forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert _code(fetch(forged, store)) == "SignatureDoesNotMatch"
    unknown_key = url.replace("X-Amz-Credential=testing", "X-Amz-Credential=NOBODY")
    assert fetch(unknown_key, store).status_code == 403

    # X-Amz-Date is signed to the second, so a URL's life counts from the second it was signed
    # in: 3 s leave at least 2 for the first fetch, however slow the machine's minute.
    expiring = signer.presign_get(key, 3)
    assert fetch(expiring, store).status_code == 200
    signed = _signed_at(expiring)
    time.sleep(max(0.0, signed + 3.2 - time.time()))
    refused = fetch(expiring, store)
    assert refused.status_code == 403 and _code(refused) == "AccessDenied"

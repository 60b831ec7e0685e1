"""Direct uploads' target (docs/API.md, "Direct uploads"), on a SeaweedFS S3 store that checks
every signature:

- P9 throughput: 8 clients, each uploading a 64 MiB file by the direct path (declare, PUT its
  8 MiB parts one after another to the presigned URLs, complete), against the same clients
  PUTting the same bytes straight to the same store with one presigned PUT each; aggregate
  MB/s in alternating rounds, medians. Both end when the store holds the bytes (the product's
  at its 202 from complete; the worker's verification follows, as for any upload). Reported
  beside: the same clients sending the same 8 MiB parts straight to the store's multipart API
  with no service between, which separates the service's own cost from the store's cost of a
  multipart upload.
- P9 API cost: the API processes' CPU seconds per direct upload of 1 MiB and of 256 MiB (the
  API signs and records; the bytes never pass through it), one client after another.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import boto3
import psutil
import requests

from common.storage.s3 import S3Storage
from testkit.seaweed import SeaweedS3

MIB = 1024 * 1024


def _account(api_url: str, name: str) -> dict[str, str]:
    account = {"username": name, "email": f"{name}@example.com", "password": "bench pass"}
    requests.post(f"{api_url}/api/v2/users", json=account).raise_for_status()
    login = {"username": name, "password": "bench pass"}
    token = requests.post(f"{api_url}/api/v2/auth/token", json=login).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _direct(http: requests.Session, api: str, auth: dict, name: str, data: bytes) -> None:
    """One file by the direct path, as a plain client does it."""
    declared = {"filename": name, "size": len(data)}
    upload = http.post(f"{api}/api/v2/uploads", json=declared, headers=auth)
    upload.raise_for_status()
    upload = upload.json()
    size = upload["part_size"]
    for part in upload["parts"]:
        start = (part["part_number"] - 1) * size
        body = data[start : start + part["size"]]
        http.put(part["url"], data=body, headers=part["headers"]).raise_for_status()
    done = http.post(f"{api}/api/v2/uploads/{upload['upload_id']}/complete", headers=auth)
    assert done.status_code == 202, done.text


def _straight(http: requests.Session, store, bucket: str, name: str, data: bytes) -> None:
    """The same bytes PUT straight to the store with one presigned URL."""
    url = store.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": f"baseline/{name}"}, ExpiresIn=600
    )
    http.put(url, data=data).raise_for_status()


def _multipart(store, bucket: str, name: str, data: bytes, part_size: int) -> None:
    """The same parts sent straight to the store's multipart API, with no service between."""
    key = f"multipart/{name}"
    upload_id = store.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = []
    for number, start in enumerate(range(0, len(data), part_size), start=1):
        body = data[start : start + part_size]
        reply = store.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        etags.append({"PartNumber": number, "ETag": reply["ETag"]})
    store.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": etags}
    )


def _aggregate(clients: int, send) -> float:
    """MB/s of ``clients`` sending at once, each by ``send(index, http)``."""
    sessions = [requests.Session() for _ in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, range(clients), sessions))
    elapsed = time.perf_counter() - started
    for http in sessions:
        http.close()
    return elapsed


def _cpu(process: psutil.Process) -> float:
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        times = each.cpu_times()
        total += times.user + times.system
    return total


def p9_direct(bench):
    from bench.__main__ import Target

    bench.reset()
    store = SeaweedS3(bench.tmp / "p9-seaweed", bench.tmp / "p9-seaweed.log")
    settings = replace(bench.settings, s3_endpoint_url=store.url, s3_bucket="direct")
    S3Storage.from_settings(settings).ensure_bucket()
    api = bench.api("p9-api", settings)
    client = boto3.client("s3", endpoint_url=store.url, region_name=settings.s3_region)
    clients, size = (2, 8 * MIB) if bench.quick else (8, 64 * MIB)
    files = [bytes([65 + i]) * size for i in range(clients)]  # text: valid .txt files
    try:
        auth = _account(api.url, "p9")
        product, baseline, multipart = [], [], []
        part_size = settings.upload_part_mb * MIB
        clients_of = [
            boto3.client("s3", endpoint_url=store.url, region_name=settings.s3_region)
            for _ in range(clients)
        ]
        for round_ in range(bench.rounds()):

            def direct(i, http, round_=round_):
                _direct(http, api.url, auth, f"p9-{round_}-{i}.txt", files[i])

            def straight(i, http, round_=round_):
                _straight(http, client, "direct", f"p9-{round_}-{i}.txt", files[i])

            def parts(i, http, round_=round_):
                name = f"p9-{round_}-{i}.txt"
                _multipart(clients_of[i], "direct", name, files[i], part_size)

            product.append(clients * size / MIB / _aggregate(clients, direct))
            baseline.append(clients * size / MIB / _aggregate(clients, straight))
            multipart.append(clients * size / MIB / _aggregate(clients, parts))
        # One upload of each size in turn, each measured alone: the machine's drift falls on
        # both sizes alike.
        gunicorn = psutil.Process(api.process.pid)
        count = 1 if bench.quick else 10
        sizes = {"1 MiB": MIB, "256 MiB": (16 if bench.quick else 256) * MIB}
        payloads = {label: b"c" * each for label, each in sizes.items()}
        costs = dict.fromkeys(sizes, 0.0)
        with requests.Session() as http:
            for data in payloads.values():
                _direct(http, api.url, auth, "warm.txt", data)  # connections, caches
            for i in range(count):
                for label, data in payloads.items():
                    before = _cpu(gunicorn)
                    _direct(http, api.url, auth, f"cost-{i}.txt", data)
                    costs[label] += (_cpu(gunicorn) - before) / count * 1000
    finally:
        api.stop()
        store.stop()
    rate, base = statistics.median(product), statistics.median(baseline)
    parts_rate = statistics.median(multipart)
    small, large = costs["1 MiB"], costs["256 MiB"]
    return [
        Target("P9", f"direct uploads, {clients} x {size // MIB} MiB, aggregate", rate, base,
               "MB/s", rate / base, ">= 0.8", rate / base >= 0.8),
        Target("P9", "direct uploads vs the same parts straight to the store", rate,
               parts_rate, "MB/s", rate / parts_rate, "reported", True),
        Target("P9", "API CPU per direct upload, 256 MiB vs 1 MiB", large, small,
               "ms", large / small, "<= 1.2", large / small <= 1.2),
    ]  # fmt: skip

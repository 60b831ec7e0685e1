"""The baselines run beside the product, under the same gunicorn settings.

- ``same_work_app``: P1's baseline: an upload endpoint doing exactly the work the contract makes
  the product's do, plainly, with the same libraries (the list is on the function).
- ``discard_app``: the limit, not a baseline: read the whole multipart body and throw it away.
- ``sync_app``: the original design: parse the upload and push it to the store inside the
  request, answering only once S3 has it (P2).
- ``push_loop``: P3's baseline: what the contract makes a worker do for each staged file,
  plainly (the list is on the function).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import unicodedata
import uuid
from datetime import UTC, datetime

import boto3
import psycopg
import redis
from botocore.config import Config
from flask import Flask, request
from werkzeug.sansio.multipart import Data, Epilogue, File, MultipartDecoder, NeedData

CHUNK = 256 * 1024
_local = threading.local()


def _database() -> psycopg.Connection:
    """One connection per thread (gunicorn's gthread workers), opened on first use."""
    if getattr(_local, "db", None) is None:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        _local.db = psycopg.connect(url, autocommit=True)  # transaction() below: one each
    return _local.db


_BROKER: redis.Redis | None = None


def _broker() -> redis.Redis:
    global _BROKER
    if _BROKER is None:
        _BROKER = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _BROKER


def _task(name: str, queue: str, file_id: int) -> bytes:
    """A Celery protocol 2 message for ``name(file_id)``, as kombu's Redis transport stores it."""
    task_id = f"ingest-{file_id}-0"
    body = base64.b64encode(json.dumps([[file_id], {}, {}]).encode()).decode()
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": name, "id": task_id, "root_id": task_id},
            "properties": {
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_tag": str(uuid.uuid4()),
                "body_encoding": "base64",
                "correlation_id": task_id,
            },
        }
    ).encode()


def same_work_app(environ, start_response):
    """Everything the contract makes an upload do before its 201, and nothing more:

    1. stream the multipart body's file part (werkzeug's sans-io decoder, as the product) to a
       new file in STAGING_DIR, hashing its sha256 on the way;
    2. fsync the file, rename it into place, fsync the directory;
    3. in one PostgreSQL transaction (psycopg): insert the file's row (with its search name),
       its outbox entry and its event row;
    4. ring the live events' doorbell (one Redis PUBLISH: the contract wakes the event readers
       after each commit that wrote events) and push the ingest task's message to Redis (one
       LPUSH of a Celery message);
    5. answer 201 with the file as JSON.

    No Flask, ORM, limiter, metrics or logging; no validation beyond what the steps need.
    """
    if environ["REQUEST_METHOD"] != "POST":  # the launcher's probe
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    staging = os.environ["STAGING_DIR"]
    boundary = environ["CONTENT_TYPE"].split("boundary=", 1)[1].strip('"').encode()
    decoder = MultipartDecoder(boundary, max_form_memory_size=None)
    stream = environ["wsgi.input"]
    now = datetime.now(UTC)
    name, original, digest, size, out = None, None, hashlib.sha256(), 0, None
    partial = None
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData):
            decoder.receive_data(stream.read(CHUNK) or None)
        elif isinstance(event, File):
            original = event.filename
            name = f"{now:%Y%m%d_%H%M%S}_{secrets.token_hex(8)}.{original.rsplit('.', 1)[-1]}"
            partial = os.path.join(staging, f".{name}.partial")
            out = open(partial, "wb")  # noqa: SIM115 - closed below
        elif isinstance(event, Data) and out is not None:
            out.write(event.data)
            digest.update(event.data)
            size += len(event.data)
            if not event.more_data:
                out.flush()
                os.fsync(out.fileno())
                out.close()
                out = None
        elif isinstance(event, Epilogue):
            break
    os.replace(partial, os.path.join(staging, name))
    directory = os.open(staging, os.O_RDONLY)
    os.fsync(directory)
    os.close(directory)
    sha256 = digest.hexdigest()
    search = unicodedata.normalize("NFKC", original).casefold()
    db = _database()
    with db.transaction():
        file_id = db.execute(
            """INSERT INTO files (name, original_name, search_name, extension, size,
                   content_type, status, sha256, metadata, attempts, uploaded_at, updated_at)
               VALUES (%s, %s, %s, %s, %s, 'application/pdf', 'pending', %s, '{}', 0, %s, %s)
               RETURNING id""",
            (name, original, search, name.rsplit(".", 1)[1], size, sha256, now, now),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO outbox (file_id, kind, created_at, publish_count) "
            "VALUES (%s, 'ingest', now(), 0)",
            (file_id,),
        )
        db.execute(
            "INSERT INTO file_events (file_id, owner_id, type, at) VALUES (%s, NULL, %s, %s)",
            (file_id, "file.pending", now),
        )
    _broker().publish("file-events", b"")
    _broker().lpush("uploads", _task("worker.tasks.ingest", "uploads", file_id))
    body = json.dumps(
        {
            "name": name,
            "original_name": original,
            "size": size,
            "content_type": "application/pdf",
            "status": "pending",
            "sha256": sha256,
            "uploaded_at": now.isoformat(),
        }
    ).encode()
    start_response(
        "201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def discard_app(environ, start_response):
    stream = environ["wsgi.input"]
    while stream.read(CHUNK):
        pass
    body = b'{"status": "discarded"}'
    start_response(
        "201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _sync_app() -> Flask:
    app = Flask(__name__)
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, request_checksum_calculation="when_required"
        ),
    )
    bucket = os.environ["S3_BUCKET"]

    @app.post("/files/upload")
    def upload():
        part = request.files["file"]
        key = f"{uuid.uuid4().hex}-{part.filename}"
        client.put_object(Bucket=bucket, Key=key, Body=part.stream, ContentType=part.mimetype)
        return json.dumps({"filename": key}), 201, {"Content-Type": "application/json"}

    return app


def sync_app(environ, start_response):
    global _SYNC
    if _SYNC is None:
        _SYNC = _sync_app()
    return _SYNC(environ, start_response)


_SYNC: Flask | None = None


def push_loop(queue_key: str, *, recorded: bool = False) -> None:
    """P3's baseline, one of 8 processes: for each file id it pulls from the Redis list
    ``queue_key``, everything the contract makes a worker do to push a staged file, and nothing
    more:

    1. read the staged file; sniff its type from its first bytes (libmagic, as the product);
    2. its sha256 and md5;
    3. ``put_object`` with Content-MD5, Content-Type, Content-Disposition and the user metadata
       (the four fields of the original API and the sha256);
    4. one UPDATE of the row (stored, its md5 and ETag, when);
    5. one message published for the next step (metadata);
    then remove the staged file. Configured by the product's environment variables; it says it
    is ready (``<queue_key>:ready``) before it takes the first id, and stops once the list has
    been empty for a second.

    ``recorded``: also what the contract has added on this path since (live status, and the
    outbox that makes the next step survive a crash): the file first becomes ``processing``
    with its ``file.processing`` event in a transaction of its own, committed before the work;
    the sha256 is compared with the one recorded at upload; the ``stored`` UPDATE commits with
    its ``file.stored`` event and the outbox entry handed over to the next step; each commit
    rings the live events' doorbell (one PUBLISH).
    """
    import magic

    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    db = psycopg.connect(url, autocommit=True)
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    store = boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
        ),
    )
    bucket, staging = os.environ["S3_BUCKET"], os.environ["STAGING_DIR"]
    magic.from_buffer(b"%PDF-1.4\n", mime=True)  # loaded before the clock starts, as a worker's
    broker.incr(f"{queue_key}:ready")
    while (item := broker.blpop(queue_key, timeout=1)) is not None:
        file_id = int(item[1])
        if recorded:
            with db.transaction():
                row = db.execute(
                    "UPDATE files SET status = 'processing', claim = %s, attempts = attempts + 1,"
                    " lease_until = now() + interval '60 seconds', updated_at = now()"
                    " WHERE id = %s AND status IN ('pending', 'processing')"
                    " RETURNING name, original_name, content_type, size, uploaded_at, sha256",
                    (f"loop:{os.getpid()}", file_id),
                ).fetchone()
                _event(db, file_id, "file.processing")
            broker.publish("file-events", b"")
            name, original, content_type, size, uploaded_at, recorded_sha256 = row
        else:
            name, original, content_type, size, uploaded_at = db.execute(
                "SELECT name, original_name, content_type, size, uploaded_at FROM files"
                " WHERE id = %s",
                (file_id,),
            ).fetchone()
        path = os.path.join(staging, name)
        with open(path, "rb") as staged:
            data = staged.read()
        if magic.from_buffer(data[:4096], mime=True) != content_type:
            raise RuntimeError(f"{name} is not {content_type}")
        sha256, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data)
        if recorded and sha256 != recorded_sha256:
            raise RuntimeError(f"{name} is damaged")
        reply = store.put_object(
            Bucket=bucket,
            Key=name,
            Body=data,
            ContentMD5=base64.b64encode(md5.digest()).decode(),
            ContentType=content_type,
            ContentDisposition=f'attachment; filename="{original}"',
            Metadata={
                "original_name": original,
                "upload_time": uploaded_at.isoformat(),
                "file_size": str(size),
                "content_type": content_type,
                "sha256": sha256,
            },
        )
        with db.transaction():
            db.execute(
                "UPDATE files SET status = 'stored', md5 = %s, etag = %s, stored_at = now(),"
                " updated_at = now() WHERE id = %s",
                (md5.hexdigest(), reply["ETag"].strip('"'), file_id),
            )
            if recorded:
                _event(db, file_id, "file.stored")
                db.execute(
                    "UPDATE outbox SET kind = 'metadata', created_at = now(),"
                    " published_at = NULL, publish_count = 0"
                    " WHERE file_id = %s AND kind = 'ingest'",
                    (file_id,),
                )
        if recorded:
            broker.publish("file-events", b"")
        broker.lpush("metadata", _task("worker.tasks.extract_metadata", "metadata", file_id))
        os.remove(path)
    db.close()


def _event(db: psycopg.Connection, file_id: int, kind: str) -> None:
    db.execute(
        "INSERT INTO file_events (file_id, owner_id, type, at) VALUES (%s, NULL, %s, now())",
        (file_id, kind),
    )

"""The baselines run beside the product, under the same gunicorn settings.

- ``discard_app``: the least any upload endpoint can do: read the whole multipart body and
  throw it away (P1).
- ``sync_app``: the original design: parse the upload and push it to the store inside the
  request, answering only once S3 has it (P2).
"""

from __future__ import annotations

import json
import os
import uuid

import boto3
from botocore.config import Config
from flask import Flask, request

CHUNK = 256 * 1024


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

"""S3 and any S3-compatible store (MinIO, moto) through boto3."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from common.settings import Settings
from common.storage import (
    ObjectInfo,
    PutRequest,
    StorageIntegrityError,
    StorageUnavailable,
)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _config(*, connect: float, read: float, attempts: int, endpoint: str | None) -> Config:
    return Config(
        signature_version="s3v4",
        connect_timeout=connect,
        read_timeout=read,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        # Path-style addressing for custom endpoints: MinIO and moto have no bucket DNS names.
        s3={"addressing_style": "path" if endpoint else "auto"},
        # Every S3-compatible store checks plain Content-MD5; not all know the newer checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=20,
    )


class S3Storage:
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        session = boto3.session.Session()

        def client(endpoint: str | None, **timeouts):
            return session.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=_config(endpoint=endpoint, **timeouts),
            )

        self._client = client(endpoint_url, connect=3, read=30, attempts=3)
        self._session = session
        self._region = region
        public = public_endpoint_url or endpoint_url
        self._public_base = (
            f"{public}/{bucket}" if public else f"https://{bucket}.s3.{region}.amazonaws.com"
        )
        self._probe = client(endpoint_url, connect=1, read=1.5, attempts=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.public_s3_endpoint,
            region=settings.s3_region,
        )

    def put(self, request: PutRequest) -> ObjectInfo:
        md5_b64 = base64.b64encode(bytes.fromhex(request.md5_hex)).decode()
        with open(request.path, "rb") as body, _translated(request.key):
            reply = self._client.put_object(
                Bucket=self.bucket,
                Key=request.key,
                Body=body,
                ContentType=request.content_type,
                ContentDisposition=request.content_disposition,
                ContentMD5=md5_b64,
                Metadata=request.metadata,
            )
        if reply["ETag"].strip('"') != request.md5_hex:
            raise StorageIntegrityError(f"{request.key}: store ETag {reply['ETag']} != md5")
        # The store's own clock from the PUT's reply (its Date header is the object's
        # Last-Modified to the second), which spares a HEAD per object.
        date = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return ObjectInfo(
            key=request.key,
            size=request.path.stat().st_size,
            etag=request.md5_hex,
            last_modified=parsedate_to_datetime(date) if date else datetime.now(UTC),
            content_type=request.content_type,
            metadata=request.metadata,
        )

    def head(self, key: str) -> ObjectInfo:
        with _translated(key):
            reply = self._client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=reply["ContentLength"],
            etag=reply["ETag"].strip('"'),
            last_modified=reply["LastModified"],
            content_type=reply.get("ContentType", ""),
            metadata=reply.get("Metadata", {}),
        )

    def download(self, key: str, destination: Path) -> None:
        with _translated(key):
            self._client.download_file(self.bucket, key, str(destination))

    def delete(self, key: str) -> None:
        with _translated(key):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def presign_get(self, key: str, ttl: int) -> str:
        """A SigV4 query-signed GET URL for the host clients use (S3_PUBLIC_ENDPOINT_URL).

        Signed with botocore's own presigner (``S3SigV4QueryAuth``, what
        ``generate_presigned_url`` uses) but without the client's per-call endpoint resolution
        and event hooks, which cost ~0.3 ms a URL: a listing of 100 files signs 100 of them.
        """
        credentials = self._session.get_credentials()
        if credentials is None:
            raise StorageUnavailable("S3 credentials are missing: cannot sign download URLs")
        request = AWSRequest(method="GET", url=f"{self._public_base}/{quote(key, safe='/~')}")
        S3SigV4QueryAuth(
            credentials.get_frozen_credentials(), "s3", self._region, expires=ttl
        ).add_auth(request)
        return request.url

    def health(self) -> None:
        with _translated(None):
            self._probe.head_bucket(Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (operators and tests)."""
        with _translated(None):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self._client.create_bucket(Bucket=self.bucket)


@contextmanager
def _translated(key: str | None) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if key is not None and code in _NOT_FOUND:
            raise FileNotFoundError(key) from None
        if code in {"BadDigest", "InvalidDigest"}:
            raise StorageIntegrityError(f"{key}: {code}") from None
        raise StorageUnavailable(f"S3 {code or 'error'}: {error.get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 unreachable: {exc}") from None
